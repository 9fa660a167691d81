package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Output formats of list.
const (
	outputTable = ""
	outputWide  = "wide"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// maxWorkloadsShown bounds the WORKLOADS cell of `list --group` (wide shows all).
const maxWorkloadsShown = 3

type listOptions struct {
	pod, workload, since, signal, selector string
	group, noHeaders                       bool
	output                                 string
}

func listCommand() command {
	return command{
		name:    "list",
		args:    "[flags]",
		summary: "List core dumps, or fold them by crash signature (--group).",
		help: `List CoreDumps: pod, container, executable, signal, size, phase and age
(time since the crash), oldest first. With --group, fold dumps that share a
crash signature into one row with a count, first and last seen, and the
workloads affected.

Examples:
  kubectl coredog list
  kubectl coredog list --pod team-a/web-0 --since 24h
  kubectl coredog list --workload statefulset/web --signal segv -o wide
  kubectl coredog list -l coredog.io/node=node-1 -o json
  kubectl coredog list -A --group`,
		setup: func(fs *pflag.FlagSet) func(context.Context, *app, []string) error {
			o := &listOptions{}
			fs.StringVar(&o.pod, "pod", "", "Only dumps of this pod: NAME or NAMESPACE/NAME.")
			fs.StringVar(&o.workload, "workload", "", "Only dumps of this workload: NAME, KIND/NAME or NAMESPACE/KIND/NAME (e.g. deployment/web).")
			fs.StringVar(&o.since, "since", "", "Only dumps that crashed within this long (30m, 12h, 7d).")
			fs.StringVar(&o.signal, "signal", "", "Only dumps killed by this signal (SIGSEGV, segv or 11).")
			fs.StringVarP(&o.selector, "selector", "l", "", "Label selector (coredog.io/node, coredog.io/policy, coredog.io/namespace, "+
				"coredog.io/pod, coredog.io/signal, coredog.io/signature).")
			fs.BoolVar(&o.group, "group", false, "Fold dumps by crash signature, with a count, first and last seen and the workloads affected.")
			fs.StringVarP(&o.output, "output", "o", "", "Output format: wide, json or yaml.")
			fs.BoolVar(&o.noHeaders, "no-headers", false, "Print tables without their header line.")
			return func(ctx context.Context, a *app, args []string) error {
				if len(args) > 0 {
					return fmt.Errorf("%w: list takes no arguments (got %q); filter with --pod, --workload, --signal, --since or -l", errUsage, args)
				}
				return a.list(ctx, o)
			}
		},
	}
}

func (a *app) list(ctx context.Context, o *listOptions) error {
	switch o.output {
	case outputTable, outputWide, outputJSON, outputYAML:
	default:
		return fmt.Errorf("%w: -o %q: want wide, json or yaml", errUsage, o.output)
	}
	f, err := NewFilter(o.pod, o.workload, o.since, o.signal, a.now())
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	opts := []client.ListOption{}
	if ns := a.listNamespace(); ns != "" {
		opts = append(opts, client.InNamespace(ns))
	}
	if o.selector != "" {
		sel, err := labels.Parse(o.selector)
		if err != nil {
			return fmt.Errorf("%w: -l %q: %v", errUsage, o.selector, err)
		}
		opts = append(opts, client.MatchingLabelsSelector{Selector: sel})
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	var list coredogv1.CoreDumpList
	if err := c.List(ctx, &list, opts...); err != nil {
		return apiError(err, "listing CoreDumps in "+a.describeScope())
	}
	var dumps []coredogv1.CoreDump
	for i := range list.Items {
		if f.Match(&list.Items[i]) {
			dumps = append(dumps, list.Items[i])
		}
	}
	sortDumps(dumps)
	if o.group {
		groups := GroupDumps(dumps)
		switch o.output {
		case outputJSON:
			return writeJSON(a.stdout, groups)
		case outputYAML:
			return writeYAML(a.stdout, groups)
		}
		if len(groups) == 0 {
			fmt.Fprintf(a.stderr, "No core dumps found in %s.\n", a.describeScope())
			return nil
		}
		RenderGroups(a.stdout, groups, o.output == outputWide, o.noHeaders, a.now())
		return nil
	}
	switch o.output {
	case outputJSON, outputYAML:
		out := coredogv1.CoreDumpList{Items: dumps}
		out.APIVersion, out.Kind = coredogv1.GroupVersion.String(), "List"
		for i := range out.Items {
			out.Items[i].APIVersion, out.Items[i].Kind = coredogv1.GroupVersion.String(), "CoreDump"
			out.Items[i].ManagedFields = nil
		}
		if out.Items == nil {
			out.Items = []coredogv1.CoreDump{}
		}
		if o.output == outputJSON {
			return writeJSON(a.stdout, out)
		}
		return writeYAML(a.stdout, out)
	}
	if len(dumps) == 0 {
		fmt.Fprintf(a.stderr, "No core dumps found in %s.\n", a.describeScope())
		return nil
	}
	RenderList(a.stdout, dumps, ListFormat{Wide: o.output == outputWide, WithNamespace: a.allNamespaces, NoHeaders: o.noHeaders}, a.now())
	return nil
}

func (a *app) describeScope() string {
	if a.allNamespaces {
		return "any namespace"
	}
	return "namespace " + a.namespace
}

// ListFormat says how RenderList lays out its table.
type ListFormat struct {
	// Wide adds NODE, SIGNATURE, WORKLOAD and LOCATION.
	Wide bool
	// WithNamespace prints names as NAMESPACE/NAME (list -A).
	WithNamespace bool
	NoHeaders     bool
}

// RenderList prints dumps as a table, in the order given. The columns are
// `kubectl get coredumps`'s, except that AGE is the time since the crash.
func RenderList(w io.Writer, dumps []coredogv1.CoreDump, f ListFormat, now time.Time) {
	tw := newTable(w)
	if !f.NoHeaders {
		cols := []string{"NAME", "NAMESPACE", "POD", "CONTAINER", "EXECUTABLE", "SIGNAL", "SIZE", "PHASE", "AGE"}
		if f.Wide {
			cols = append(cols, "NODE", "SIGNATURE", "WORKLOAD", "LOCATION")
		}
		header(tw, cols...)
	}
	for i := range dumps {
		cd := &dumps[i]
		p := podRef(cd)
		cells := []string{
			qualifiedName(cd, f.WithNamespace), p.Namespace, p.Name, p.Container,
			cd.Spec.Process.Executable, signalName(cd), displaySize(cd), phase(cd), age(now, cd.CrashTime()),
		}
		if f.Wide {
			cells = append(cells, cd.Spec.NodeName, cd.Spec.Signature, workload(cd), location(cd))
		}
		row(tw, cells...)
	}
	tw.Flush()
}

// phase is the phase, with the reason of a Skipped or Failed dump.
func phase(cd *coredogv1.CoreDump) string {
	p := string(cd.Status.Phase)
	if p == "" {
		p = string(coredogv1.PhasePending)
	}
	if r := cd.Status.Reason; r != "" && (cd.Status.Phase == coredogv1.PhaseSkipped || cd.Status.Phase == coredogv1.PhaseFailed) {
		p += " (" + r + ")"
	}
	return p
}

// RenderGroups prints groups as a table, in the order given.
func RenderGroups(w io.Writer, groups []Group, wide, noHeaders bool, now time.Time) {
	tw := newTable(w)
	if !noHeaders {
		cols := []string{"SIGNATURE", "CRASHES", "DUMPS", "EXECUTABLE", "SIGNAL", "FIRST SEEN", "LAST SEEN", "WORKLOADS"}
		if wide {
			cols = append(cols, "CRASH SITE", "LATEST DUMP")
		}
		header(tw, cols...)
	}
	for _, g := range groups {
		sig := g.Signature
		if sig == "" {
			sig = "-"
		}
		cells := []string{sig, strconv.FormatInt(g.Crashes, 10), strconv.Itoa(g.Count), g.Executable, g.Signal, age(now, g.FirstSeen), age(now, g.LastSeen), workloadsCell(g, wide)}
		if wide {
			site := g.CrashModule
			if g.CrashOffset != "" {
				site += "+" + g.CrashOffset
			}
			last := ""
			if n := len(g.Dumps); n > 0 {
				last = g.Dumps[n-1]
				if n > 1 {
					last += fmt.Sprintf(" (+%d)", n-1)
				}
			}
			cells = append(cells, site, last)
		}
		row(tw, cells...)
	}
	tw.Flush()
}

func workloadsCell(g Group, all bool) string {
	ws := g.Workloads
	more := 0
	if !all && len(ws) > maxWorkloadsShown {
		more = len(ws) - maxWorkloadsShown
		ws = ws[:maxWorkloadsShown]
	}
	s := strings.Join(ws, ",")
	if more > 0 {
		s += fmt.Sprintf(" +%d more", more)
	}
	if g.Unattributed > 0 {
		if s != "" {
			s += " "
		}
		s += fmt.Sprintf("(%d without pod)", g.Unattributed)
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func writeYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
