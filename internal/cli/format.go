package cli

import (
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/util/duration"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// none is what an empty cell shows, as in kubectl.
const none = "<none>"

// newTable is kubectl's table layout.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
}

// row writes one table row; cells are escaped, empty ones show <none>.
// Write errors surface where the table is flushed.
func row(w io.Writer, cells ...string) {
	for i, c := range cells {
		if i > 0 {
			_, _ = io.WriteString(w, "\t")
		}
		if c == "" {
			c = none
		}
		_, _ = io.WriteString(w, safe(c))
	}
	_, _ = io.WriteString(w, "\n")
}

// header writes a header row (never escaped or replaced).
func header(w io.Writer, cells ...string) {
	_, _ = io.WriteString(w, strings.Join(cells, "\t")+"\n")
}

// safe escapes what a node may have put into a value (executable names,
// command lines, file names) and a terminal would interpret: control
// characters, escape sequences, invalid UTF-8. Tabs are escaped too, since
// they would break table columns.
func safe(s string) string {
	clean := utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) < 0
	if clean {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

// age is kubectl's rendering of how long ago t was ("5m", "3d4h").
func age(now, t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	d := max(now.Sub(t), 0)
	return duration.HumanDuration(d)
}

// displaySize is the dump's size for people.
func displaySize(cd *coredogv1.CoreDump) string {
	if cd.Spec.DisplaySize != "" {
		return cd.Spec.DisplaySize
	}
	return coredogv1.DisplaySize(cd.Spec.Size)
}

// signalName is the signal's name, from the number when the agent gave none.
func signalName(cd *coredogv1.CoreDump) string {
	if cd.Spec.Process.SignalName != "" {
		return cd.Spec.Process.SignalName
	}
	return coredogv1.SignalNameOf(int(cd.Spec.Process.Signal))
}

// podRef is the crashed pod, or an empty reference.
func podRef(cd *coredogv1.CoreDump) coredogv1.PodReference {
	if cd.Status.Pod != nil {
		return *cd.Status.Pod
	}
	return coredogv1.PodReference{}
}

// workload is Kind/name of the pod's workload, or "".
func workload(cd *coredogv1.CoreDump) string {
	p := podRef(cd)
	if p.WorkloadKind != "" && p.WorkloadName != "" {
		return p.WorkloadKind + "/" + p.WorkloadName
	}
	return cd.Annotations[coredogv1.AnnotationWorkload]
}

// qualifiedName is the dump's name, with its namespace when listing across namespaces.
func qualifiedName(cd *coredogv1.CoreDump, withNamespace bool) string {
	if withNamespace {
		return cd.Namespace + "/" + cd.Name
	}
	return cd.Name
}

// location is where the dump is stored, or "".
func location(cd *coredogv1.CoreDump) string {
	if cd.Status.Storage != nil {
		return cd.Status.Storage.URL
	}
	return ""
}

// truncate shortens s to n runes with an ellipsis, for one-line cells.
func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// isTerminal says whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
