package notify

import (
	"cmp"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Event is what happened to a dump, as a notification tells it.
type Event string

const (
	// EventUploaded: the dump is in storage.
	EventUploaded Event = "Uploaded"
	// EventSkipped: the dump was not stored (too large, over quota).
	EventSkipped Event = "Skipped"
	// EventFailed: the upload failed for good.
	EventFailed Event = "Failed"
	// EventThrottled: dumps of one crash were throttled during a rate-limit window.
	EventThrottled Event = "Throttled"
)

// CloudEvents types, one per event.
const (
	TypeUploaded  = "io.coredog.coredump.uploaded"
	TypeSkipped   = "io.coredog.coredump.skipped"
	TypeFailed    = "io.coredog.coredump.failed"
	TypeThrottled = "io.coredog.coredump.throttled"
)

// Message is what a notification says, whatever the sink. Values from the
// node (executable, file names) are untrusted: renderers clean them.
type Message struct {
	Event   Event
	Cluster string
	Policy  string
	// CoreDump, CoreDumpNamespace and UID name the CoreDump object.
	CoreDump          string
	CoreDumpNamespace string
	UID               string
	// Namespace, Pod, Container, Image and Workload ("Deployment/web") of the
	// pod that crashed; empty when unresolved.
	Namespace, Pod, Container, Image, Workload string
	Node                                       string
	Executable                                 string
	Signal                                     string
	SignalNumber                               int32
	Signature                                  string
	// Occurrences is how many CoreDumps share the signature.
	Occurrences int
	CrashedAt   time.Time
	Size        int64
	// Reason and Detail are the CoreDump's status reason and message.
	Reason, Detail string
	// Location is where the dump is stored (s3://..., file://...).
	Location string
	// Link is where to download it: a pre-signed URL, or Location when the
	// store cannot sign. LinkExpires is zero when Link does not expire.
	Link        string
	LinkExpires time.Time
	// Throttled is set for EventThrottled.
	Throttled *ThrottleSummary
	// Frames are the crashing thread's top frames (at most TopFrames) from
	// status.analysis, innermost first.
	Frames []coredogv1.StackFrame
}

// factTopFrames labels the frames among a message's facts.
const factTopFrames = "Top frames"

// TopFrames is how many frames of the crashing thread a notification shows.
const TopFrames = 5

// FrameText spells a frame in one short line: "function (module+0xoffset)",
// "?? (module+0xoffset)" when it has no name.
func FrameText(f coredogv1.StackFrame) string {
	fn := cmp.Or(clean(f.Function, 200), "??")
	where := clean(f.Module, 100)
	if f.Offset != "" {
		where += "+" + clean(f.Offset, 18)
	}
	if where == "" {
		return fn
	}
	return fn + " (" + where + ")"
}

// ThrottleSummary counts the throttled dumps of one rate-limit window.
type ThrottleSummary struct {
	// Count of throttled dumps created in [Since, Until).
	Count        int
	Since, Until time.Time
	// Limit and Window are the policy's rate limit.
	Limit  int32
	Window time.Duration
}

// CloudEventType is the CloudEvents type of the message.
func (m *Message) CloudEventType() string {
	switch m.Event {
	case EventSkipped:
		return TypeSkipped
	case EventFailed:
		return TypeFailed
	case EventThrottled:
		return TypeThrottled
	default:
		return TypeUploaded
	}
}

// Title is one line that says what happened.
func (m *Message) Title() string {
	what := fmt.Sprintf("%s killed by %s", cmp.Or(clean(m.Executable, 80), "a process"), cmp.Or(m.Signal, "an unknown signal"))
	where := "on node " + clean(m.Node, 80)
	if m.Pod != "" {
		where = "in " + clean(m.Namespace+"/"+m.Pod, 120)
	}
	switch m.Event {
	case EventSkipped:
		return fmt.Sprintf("Core dump not stored (%s): %s %s", clean(m.Reason, 40), what, where)
	case EventFailed:
		return fmt.Sprintf("Core dump upload failed: %s %s", what, where)
	case EventThrottled:
		n := 0
		if m.Throttled != nil {
			n = m.Throttled.Count
		}
		return fmt.Sprintf("Crash repeating: %s %s; %d more %s throttled", what, where, n, plural(n, "dump", "dumps"))
	default:
		return fmt.Sprintf("Core dump: %s %s", what, where)
	}
}

// Fact is one labelled value of a message.
type Fact struct{ Label, Value string }

// Facts are the message's details in display order, values cleaned and
// bounded; empty values are left out.
func (m *Message) Facts() []Fact {
	sig := clean(m.Signature, 64)
	if sig != "" && m.Occurrences > 0 {
		sig = fmt.Sprintf("%s (%d %s)", sig, m.Occurrences, plural(m.Occurrences, "occurrence", "occurrences"))
	}
	signal := m.Signal
	if signal != "" && m.SignalNumber > 0 {
		signal = fmt.Sprintf("%s (%d)", signal, m.SignalNumber)
	}
	facts := []Fact{
		{"Cluster", clean(m.Cluster, 100)},
		{"Namespace", clean(m.Namespace, 100)},
		{"Pod", clean(m.Pod, 253)},
		{"Container", clean(m.Container, 100)},
		{"Workload", clean(m.Workload, 200)},
		{"Executable", clean(m.Executable, 200)},
		{"Signal", clean(signal, 40)},
		{"Node", clean(m.Node, 253)},
		{"Signature", sig},
	}
	if t := m.Throttled; t != nil {
		facts = append(facts, Fact{"Throttled", fmt.Sprintf("%d %s between %s and %s (rate limit %d per %s)",
			t.Count, plural(t.Count, "dump", "dumps"), t.Since.UTC().Format(time.RFC3339), t.Until.UTC().Format(time.RFC3339), t.Limit, t.Window)})
	} else {
		facts = append(facts, Fact{"Phase", clean(string(m.Event)+" ("+m.Reason+")", 80)})
		if m.Size > 0 {
			facts = append(facts, Fact{"Size", coredogv1.DisplaySize(m.Size)})
		}
	}
	if len(m.Frames) > 0 {
		texts := make([]string, 0, TopFrames)
		for _, f := range m.Frames[:min(len(m.Frames), TopFrames)] {
			texts = append(texts, FrameText(f))
		}
		facts = append(facts, Fact{factTopFrames, strings.Join(texts, " ← ")})
	}
	facts = append(facts, Fact{"CoreDump", clean(m.CoreDump, 253)})
	if m.Event != EventUploaded && m.Detail != "" {
		facts = append(facts, Fact{"Detail", clean(m.Detail, 300)})
	}
	out := facts[:0]
	for _, f := range facts {
		if f.Value != "" {
			out = append(out, f)
		}
	}
	return out
}

// LinkIsURL reports whether Link is something a browser opens.
func (m *Message) LinkIsURL() bool {
	return strings.HasPrefix(m.Link, "https://") || strings.HasPrefix(m.Link, "http://")
}

// LinkNote says what the link is, for people.
func (m *Message) LinkNote() string {
	if m.Link == "" {
		return ""
	}
	if !m.LinkExpires.IsZero() {
		return "expires " + m.LinkExpires.UTC().Format(time.RFC3339)
	}
	return "stored location"
}

// clean makes an untrusted value one bounded line: control characters
// (newlines included) become spaces, and values longer than max runes are
// cut with an ellipsis.
func clean(s string, max int) string {
	if s == "" {
		return ""
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = string(r[:max-1]) + "…"
	}
	return s
}

// defang keeps an untrusted value from forming markdown links, images or
// HTML in sinks that render markdown (WeCom, DingTalk, Teams): it swaps the
// brackets that make them for look-alikes.
func defang(s string) string {
	return strings.NewReplacer("[", "⟦", "]", "⟧", "<", "‹", ">", "›", "`", "'").Replace(s)
}

// slackEscape escapes the three characters Slack's mrkdwn gives meaning to.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// truncateBytes cuts s to at most n bytes on a rune boundary.
func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
