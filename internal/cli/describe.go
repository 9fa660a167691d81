package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/storage"
)

func describeCommand() command {
	return command{
		name:    "describe",
		args:    "NAME... [flags]",
		summary: "Show everything known about core dumps.",
		help: `Show everything known about one or more CoreDumps: the pod and its workload,
image and image ID, node, the process (executable, arguments, pid, signal,
dump mode, fault address), where it crashed (module, offset, build-id), its
crash signature and how many other dumps share it, where it is stored, its
conditions, and the events about it (on the CoreDump, and the CoreDumped
events on the pod).

The arguments are not in the CoreDump (they can hold secrets, and every
node agent can read every CoreDump): they are read from the metadata file
stored next to the dump, with your own storage credentials, as download
reads the dump. Without read access to the bucket, describe says so on the
Arguments line and shows the rest.

Last words: the tail of the crashed container's log (for Go, Java and
Python programs often the runtime's own traceback), which the manager
stored next to the dump, read the same way. Control characters and
escape sequences in it are shown as \xNN: the log is the program's.

NAME may be NAMESPACE/NAME, as list -A prints it.

Examples:
  kubectl coredog describe core-5f0c9e1a2b3c
  kubectl coredog describe -n coredog-system core-5f0c9e1a2b3c core-77aa01b2c3d4`,
		setup: func(fs *pflag.FlagSet) func(context.Context, *app, []string) error {
			var storageURL string
			var logLines int
			fs.StringVar(&storageURL, "storage-url", "", "Bucket URL with its options, instead of the policy's spec.storage.url, to read the stored arguments (see download).")
			fs.IntVar(&logLines, "log-lines", defaultLogLines, "How many of the last lines of the crashed container's stored log to show (0 hides them; at most 200 are stored).")
			return func(ctx context.Context, a *app, args []string) error {
				if len(args) == 0 {
					return fmt.Errorf("%w: describe needs a CoreDump name (see kubectl coredog list)", errUsage)
				}
				if err := a.noAllNamespaces("describe"); err != nil {
					return err
				}
				for i, arg := range args {
					if i > 0 {
						fmt.Fprintln(a.stdout)
					}
					if err := a.describe(ctx, arg, storageURL, logLines); err != nil {
						return err
					}
				}
				return nil
			}
		},
	}
}

// Description is what describe shows about one dump.
type Description struct {
	Dump *coredogv1.CoreDump
	// SameSignature counts the other dumps with the dump's signature; -1 when
	// they could not be listed.
	SameSignature int
	// Events are about the dump: on the CoreDump, and CoreDumped events on
	// its pod that name it as related.
	Events []eventsv1.Event
	// EventsError says why events could not be read, if they could not.
	EventsError string
	// CommandLine is the crashed process's arguments, from the stored
	// metadata file; CommandLineError says why there are none to show.
	CommandLine, CommandLineError string
	// LastWords is the tail of the crashed container's stored log, one
	// entry a line; LastWordsFrom says which log it is, LastWordsError
	// why there is none to show.
	LastWords                     []string
	LastWordsFrom, LastWordsError string
}

// defaultLogLines is how many log lines describe shows.
const defaultLogLines = 20

// maxLogLineRunes cuts a log line for the terminal.
const maxLogLineRunes = 400

// getDump fetches a CoreDump by NAME or NAMESPACE/NAME and says what to do
// when there is none.
func (a *app) getDump(ctx context.Context, arg string) (*coredogv1.CoreDump, error) {
	ns, name := splitName(arg, a.namespace)
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	var cd coredogv1.CoreDump
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cd); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("no CoreDump %q in namespace %s; see `kubectl coredog list -n %s` (or -A, if CoreDog runs in another namespace)", name, ns, ns)
		}
		return nil, apiError(err, fmt.Sprintf("reading CoreDump %s/%s", ns, name))
	}
	return &cd, nil
}

func (a *app) describe(ctx context.Context, arg, storageURL string, logLines int) error {
	cd, err := a.getDump(ctx, arg)
	if err != nil {
		return err
	}
	d := Description{Dump: cd, SameSignature: -1}
	c, _ := a.client()
	if sig := cd.Spec.Signature; sig != "" {
		var same coredogv1.CoreDumpList
		if err := c.List(ctx, &same, client.InNamespace(cd.Namespace), client.MatchingLabels{coredogv1.LabelSignature: coredogv1.LabelValue(sig)}); err == nil {
			d.SameSignature = 0
			for i := range same.Items {
				if same.Items[i].Spec.Signature == sig && same.Items[i].Name != cd.Name {
					d.SameSignature++
				}
			}
		}
	}
	d.Events, err = a.dumpEvents(ctx, cd)
	if err != nil {
		d.EventsError = err.Error()
	}
	a.describeStored(ctx, &d, storageURL, logLines)
	RenderDescription(a.stdout, d, a.now())
	return nil
}

// describeStored fills in what is stored next to the dump: the command
// line and the log's tail, or why they cannot be shown.
func (a *app) describeStored(ctx context.Context, d *Description, storageURL string, logLines int) {
	switch d.Dump.Status.Phase {
	case coredogv1.PhaseUploaded:
	case coredogv1.PhaseSkipped, coredogv1.PhaseFailed:
		d.CommandLineError = "not kept: the arguments are stored only with an uploaded dump"
		d.LastWordsError = "not kept: the log is stored only with an uploaded dump"
		return
	default:
		d.CommandLineError = "stored with the dump once it is Uploaded"
		d.LastWordsError = "stored with the dump once it is Uploaded"
		return
	}
	s, err := a.storedSidecars(ctx, d.Dump, storageURL, logLines > 0)
	if err != nil {
		d.CommandLineError = "cannot read the stored metadata: " + err.Error()
		d.LastWordsError = d.CommandLineError
		return
	}
	d.CommandLine = s.doc.Spec.Process.CommandLine
	if logLines <= 0 {
		return
	}
	lw := s.doc.LastWords
	switch {
	case lw.Run == "" && lw.Note != "":
		d.LastWordsError = "no log was kept: " + lw.Note
	case errors.Is(s.logErr, storage.ErrNotFound) || s.logErr != nil && lw.Run == "":
		d.LastWordsError = "no log was kept"
	case s.logErr != nil:
		d.LastWordsError = "cannot read the stored log: " + s.logErr.Error()
	default:
		d.LastWords = tailLines(s.log, logLines)
		d.LastWordsFrom = fmt.Sprintf("the %s run of container %s, last %d of %d stored lines", lw.Run, lw.Container, len(d.LastWords), countLines(s.log))
	}
}

// tailLines is the last n lines of log, each cut to maxLogLineRunes.
func tailLines(log []byte, n int) []string {
	text := strings.TrimRight(string(log), "\n")
	if text == "" {
		return nil
	}
	lines := strings.Split(text, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		if r := []rune(l); len(r) > maxLogLineRunes {
			l = string(r[:maxLogLineRunes]) + "…"
		}
		lines[i] = l
	}
	return lines
}

func countLines(log []byte) int {
	text := strings.TrimRight(string(log), "\n")
	if text == "" {
		return 0
	}
	return strings.Count(text, "\n") + 1
}

// dumpEvents lists the events about cd, oldest first.
func (a *app) dumpEvents(ctx context.Context, cd *coredogv1.CoreDump) ([]eventsv1.Event, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	var out []eventsv1.Event
	var own eventsv1.EventList
	if err := c.List(ctx, &own, client.InNamespace(cd.Namespace), client.MatchingFields{"regarding.name": cd.Name}); err != nil {
		return nil, apiError(err, "listing events")
	}
	for _, e := range own.Items {
		if e.Regarding.Kind == "CoreDump" && (e.Regarding.UID == "" || e.Regarding.UID == cd.UID) {
			out = append(out, e)
		}
	}
	if p := podRef(cd); p.Name != "" && p.Namespace != "" {
		var onPod eventsv1.EventList
		err := c.List(ctx, &onPod, client.InNamespace(p.Namespace), client.MatchingFields{"regarding.name": p.Name, "reason": coredogv1.EventCoreDumped})
		if err != nil {
			return out, apiError(err, "listing the pod's events")
		}
		for _, e := range onPod.Items {
			if e.Regarding.Kind == "Pod" && e.Related != nil && e.Related.Kind == "CoreDump" && e.Related.Name == cd.Name {
				out = append(out, e)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return eventTime(&out[i]).Before(eventTime(&out[j])) })
	return out, nil
}

// eventTime is when an event last happened.
func eventTime(e *eventsv1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.DeprecatedLastTimestamp.IsZero():
		return e.DeprecatedLastTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

func eventCount(e *eventsv1.Event) int32 {
	switch {
	case e.Series != nil && e.Series.Count > 0:
		return e.Series.Count
	case e.DeprecatedCount > 0:
		return e.DeprecatedCount
	}
	return 1
}

// describeColumn is where values start in describe's output.
const describeColumn = 18

// describer writes "Label:  value" lines at indentation levels, like
// kubectl describe, with values aligned at describeColumn.
type describer struct {
	w   io.Writer
	err error
}

func (d *describer) line(level int, label, value string) {
	if d.err != nil {
		return
	}
	indent := strings.Repeat("  ", level)
	switch {
	case label == "":
		_, d.err = fmt.Fprintf(d.w, "%s%s\n", indent, safe(value))
	case strings.HasSuffix(label, ":"):
		_, d.err = fmt.Fprintf(d.w, "%s%s\n", indent, label)
	default:
		if value == "" {
			value = none
		}
		_, d.err = fmt.Fprintf(d.w, "%-*s %s\n", describeColumn-1, indent+label+":", safe(value))
	}
}

// RenderDescription prints what describe shows about one dump, a section per
// part of the CoreDump in the order kubectl describe readers expect.
//
//nolint:gocyclo // one branch per optional field, read top to bottom
func RenderDescription(w io.Writer, d Description, now time.Time) {
	cd := d.Dump
	p := &describer{w: w}
	when := func(t *metav1.Time) string {
		if t == nil || t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339) + " (" + age(now, t.Time) + " ago)"
	}

	p.line(0, "Name", cd.Name)
	p.line(0, "Namespace", cd.Namespace)
	p.line(0, "Phase", phase(cd))
	if cd.Status.Message != "" {
		p.line(0, "Message", cd.Status.Message)
	}
	crashed := metav1.NewTime(cd.CrashTime())
	p.line(0, "Crashed", when(&crashed))
	p.line(0, "Node", cd.Spec.NodeName)
	p.line(0, "Policy", cd.Spec.PolicyName)

	pod := podRef(cd)
	p.line(0, "Pod:", "")
	if pod.Name == "" {
		msg := "unknown"
		if pod.ResolvedBy == coredogv1.ResolvedByUnresolved {
			msg = "unresolved (see Message and the PodResolved condition)"
		} else if cd.Status.Phase == "" || cd.Status.Phase == coredogv1.PhasePending {
			msg = "not resolved yet"
		}
		p.line(1, "", msg)
	} else {
		p.line(1, "Name", pod.Namespace+"/"+pod.Name)
		p.line(1, "UID", pod.UID)
		p.line(1, "Container", pod.Container)
		p.line(1, "Workload", workload(cd))
		p.line(1, "Image", pod.Image)
		p.line(1, "Image ID", pod.ImageID)
		p.line(1, "Resolved by", string(pod.ResolvedBy))
	}
	if cd.Spec.ContainerID != "" {
		p.line(1, "Container ID", cd.Spec.ContainerID)
	}

	pr := cd.Spec.Process
	p.line(0, "Process:", "")
	p.line(1, "Executable", pr.Executable)
	if d.CommandLineError != "" {
		p.line(1, "Arguments", "<"+d.CommandLineError+">")
	} else {
		p.line(1, "Arguments", d.CommandLine)
	}
	pid := ""
	if pr.PID > 0 {
		pid = strconv.FormatInt(pr.PID, 10)
	}
	if pr.HostPID > 0 {
		pid = strings.TrimSpace(pid + " (host " + strconv.FormatInt(pr.HostPID, 10) + ")")
	}
	p.line(1, "PID", pid)
	if pr.Hostname != "" {
		p.line(1, "Hostname", pr.Hostname)
	}
	if pr.UID != nil || pr.GID != nil {
		p.line(1, "UID/GID", idString(pr.UID)+"/"+idString(pr.GID))
	}
	sig := signalName(cd)
	if pr.Signal > 0 {
		sig += " (" + strconv.Itoa(int(pr.Signal)) + ")"
	}
	p.line(1, "Signal", sig)
	if pr.DumpMode != "" {
		mode := string(pr.DumpMode)
		if pr.DumpMode == coredogv1.DumpModePrivileged {
			mode += " (dumped as root under fs.suid_dumpable=2: a setuid or credential-changing process; its memory may hold root's secrets)"
		}
		p.line(1, "Dump mode", mode)
	}

	p.line(0, "Crash:", "")
	if e := cd.Spec.ELF; e != nil {
		p.line(1, "Fault address", e.FaultAddress)
		p.line(1, "Module", e.CrashModule)
		p.line(1, "Offset", e.CrashOffset)
		p.line(1, "Build ID", e.BuildID)
		p.line(1, "Machine", e.Machine)
		if e.Threads > 0 {
			p.line(1, "Threads", strconv.Itoa(int(e.Threads)))
		}
		if e.Truncated {
			p.line(1, "Truncated", "yes: the file is shorter than its headers say; some memory is missing")
		}
	} else {
		p.line(1, "", "no ELF notes")
	}
	if cd.Spec.ParseError != "" {
		p.line(1, "Parse error", cd.Spec.ParseError)
	}
	sigLine := cd.Spec.Signature
	if sigLine != "" {
		switch n := d.SameSignature; {
		case n < 0:
			sigLine += " (other dumps with it could not be listed)"
		case n == 0:
			sigLine += " (no other dump has it)"
		case n == 1:
			sigLine += " (1 other dump has it: kubectl coredog list -l " + coredogv1.LabelSignature + "=" + coredogv1.LabelValue(cd.Spec.Signature) + ")"
		default:
			sigLine += fmt.Sprintf(" (%d other dumps have it: kubectl coredog list -l %s=%s)", n, coredogv1.LabelSignature, coredogv1.LabelValue(cd.Spec.Signature))
		}
	}
	p.line(0, "Signature", sigLine)
	describeBacktrace(p, cd)

	p.line(0, "File:", "")
	p.line(1, "Name", cd.Spec.FileName)
	p.line(1, "Size", fmt.Sprintf("%s (%d bytes)", displaySize(cd), cd.Spec.Size))
	p.line(1, "Detected", strings.TrimSpace(when(&cd.Spec.DetectedAt)+" by "+string(cd.Spec.DetectedBy)))
	if cd.Spec.RefusedReason != "" {
		p.line(1, "Refused", cd.Spec.RefusedReason)
	}

	p.line(0, "Storage:", "")
	if st := cd.Status.Storage; st != nil {
		p.line(1, "URL", st.URL)
		p.line(1, "Key", st.Key)
		p.line(1, "Compression", string(st.Compression))
		if st.StoredSize > 0 {
			p.line(1, "Stored size", fmt.Sprintf("%s (%d bytes)", coredogv1.DisplaySize(st.StoredSize), st.StoredSize))
		}
		p.line(1, "SHA-256", st.SHA256)
		p.line(1, "Uploaded", when(st.UploadedAt))
	} else {
		p.line(1, "", "not stored")
	}
	if cd.Status.Attempts > 0 {
		p.line(0, "Attempts", strconv.Itoa(int(cd.Status.Attempts)))
	}
	p.line(0, "Labels", joinMap(cd.Labels))
	renderLastWords(p, d)
	if p.err != nil {
		return
	}

	conds := append([]metav1.Condition(nil), cd.Status.Conditions...)
	sort.SliceStable(conds, func(i, j int) bool { return conds[i].LastTransitionTime.Before(&conds[j].LastTransitionTime) })
	if len(conds) == 0 {
		p.line(0, "Conditions", "")
	} else {
		fmt.Fprintln(w, "Conditions:")
		ct := newTable(w)
		header(ct, "  TYPE", "STATUS", "REASON", "SINCE", "MESSAGE")
		for _, c := range conds {
			row(ct, "  "+c.Type, string(c.Status), c.Reason, age(now, c.LastTransitionTime.Time), c.Message)
		}
		ct.Flush()
	}

	switch {
	case d.EventsError != "":
		p.line(0, "Events", "<"+d.EventsError+">")
	case len(d.Events) == 0:
		p.line(0, "Events", "")
	default:
		fmt.Fprintln(w, "Events:")
		et := newTable(w)
		header(et, "  TYPE", "REASON", "AGE", "FROM", "ON", "MESSAGE")
		for i := range d.Events {
			e := &d.Events[i]
			ago := age(now, eventTime(e))
			if n := eventCount(e); n > 1 {
				ago += fmt.Sprintf(" (x%d)", n)
			}
			on := e.Regarding.Kind + "/" + e.Regarding.Name
			if e.Regarding.Namespace != "" && e.Regarding.Kind == "Pod" {
				on = "Pod/" + e.Regarding.Namespace + "/" + e.Regarding.Name
			}
			from := e.ReportingController
			if from == "" {
				from = e.DeprecatedSource.Component
			}
			row(et, "  "+e.Type, e.Reason, ago, from, on, e.Note)
		}
		et.Flush()
	}
}

func idString(id *int64) string {
	if id == nil {
		return "?"
	}
	return strconv.FormatInt(*id, 10)
}

func joinMap(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// renderLastWords shows the tail of the crashed container's log, every
// line escaped: the log is whatever the program wrote.
func renderLastWords(p *describer, d Description) {
	switch {
	case d.LastWordsError != "":
		p.line(0, "Last words", "<"+d.LastWordsError+">")
	case len(d.LastWords) == 0 && d.LastWordsFrom == "":
		// --log-lines 0
	case len(d.LastWords) == 0:
		p.line(0, "Last words", "<the log is empty>")
	default:
		p.line(0, "Last words:", "")
		p.line(1, "", "("+d.LastWordsFrom+")")
		for _, l := range d.LastWords {
			p.line(1, "", l)
		}
	}
}
