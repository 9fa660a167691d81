package storage

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode"
)

// ErrUnsafeKey is returned when a key template renders an empty or unsafe key.
var ErrUnsafeKey = errors.New("unsafe object key")

// maxKeyBytes is S3's object key limit.
const maxKeyBytes = 1024

// KeyFields are the values a key template can use.
type KeyFields struct {
	Namespace, Pod, Container, Workload, Node string
	Executable, SignalName, Signature, Name   string
	Signal                                    int
	// Time is the dump time as 20060102T150405Z, which sorts.
	Time string
}

// KeyTemplate is a parsed spec.storage.keyTemplate.
type KeyTemplate struct{ t *template.Template }

// ParseKeyTemplate parses a key template and renders it once with sample
// values, so that unknown fields and templates that always render an unsafe
// key fail when the policy is applied rather than at the first crash.
func ParseKeyTemplate(text string) (*KeyTemplate, error) {
	t, err := template.New("key").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parsing key template: %w", err)
	}
	if err := checkBounded(t); err != nil {
		return nil, err
	}
	kt := &KeyTemplate{t: t}
	sample := KeyFields{
		Namespace: "default", Pod: "web-0", Container: "app", Workload: "StatefulSet/web", Node: "node-1",
		Executable: "server", Signal: 11, SignalName: "SIGSEGV", Signature: "0123456789ab",
		Name: "core-0123456789abcdef", Time: "20260101T000000Z",
	}
	if _, err := kt.Render(sample); err != nil {
		return nil, err
	}
	return kt, nil
}

// LegacyDefaultKeyTemplate is the default key template of earlier
// versions, which the API server stored into the policies it defaulted. It
// joined the dump's name to other fields with "-", so that fields a forged
// CoreDump chooses could render another dump's key; DefaultKeyTemplate
// replaces it (see the API's DefaultKeyTemplate).
const LegacyDefaultKeyTemplate = "{{.Namespace}}/{{.Pod}}/{{.Time}}-{{.Executable}}-{{.SignalName}}-{{.Name}}"

// Render produces a key. Every field value is sanitised first (path
// separators and control characters replaced, empty values become "_"), so
// that a pod or executable name cannot climb out of the prefix; the result
// is then checked as a whole.
//
// The key's last segment is the CoreDump's name: when the template does not
// end with it, "/<name>" is appended. Names are unique among CoreDumps, so
// two dumps never share a key whatever the other fields say, and a
// template without the name (or with the name inside a segment, as in
// "{{.Pod}}-{{.Name}}", which a pod name can imitate) cannot make them.
func (kt *KeyTemplate) Render(f KeyFields) (string, error) {
	clean := KeyFields{
		Namespace: segment(f.Namespace), Pod: segment(f.Pod), Container: segment(f.Container),
		Workload: segment(f.Workload), Node: segment(f.Node), Executable: segment(f.Executable),
		SignalName: segment(f.SignalName), Signature: segment(f.Signature), Name: segment(f.Name),
		Signal: f.Signal, Time: segment(f.Time),
	}
	// The writer stops a hostile template ({{range 1000000000}}) at the key
	// limit instead of letting it run the controller out of memory or time.
	b := &cappedBuffer{limit: maxKeyBytes}
	if err := kt.t.Execute(b, clean); err != nil {
		if errors.Is(err, errKeyTooLong) {
			return "", fmt.Errorf("%w: key longer than %d bytes", ErrUnsafeKey, maxKeyBytes)
		}
		return "", fmt.Errorf("rendering key template: %w", err)
	}
	key := b.String()
	if strings.TrimSpace(key) != "" && clean.Name != "_" && path.Base(key) != clean.Name {
		key += "/" + clean.Name
	}
	if err := checkKey(key); err != nil {
		return "", err
	}
	return key, nil
}

func checkKey(key string) error {
	switch {
	case strings.TrimSpace(key) == "":
		return fmt.Errorf("%w: the key template rendered an empty key", ErrUnsafeKey)
	case len(key) > maxKeyBytes:
		return fmt.Errorf("%w: key longer than %d bytes", ErrUnsafeKey, maxKeyBytes)
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("%w: key %q starts with /", ErrUnsafeKey, key)
	case strings.HasSuffix(key, "/"):
		return fmt.Errorf("%w: key %q ends with /", ErrUnsafeKey, key)
	case strings.Contains(key, "//"):
		return fmt.Errorf("%w: key %q has an empty path segment", ErrUnsafeKey, key)
	case strings.IndexFunc(key, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: key has control characters", ErrUnsafeKey)
	}
	if hasDotSegment(key) {
		return fmt.Errorf("%w: key %q has a . or .. segment", ErrUnsafeKey, key)
	}
	return nil
}

// checkBounded refuses the actions that can make a key template run for
// long without writing anything, which the key size limit cannot stop:
// {{range 1000000000}}{{end}} loops a billion times, nested ranges for ever,
// and {{template}} recurses. Without them a template's work is bounded by its
// own length (at most 1024 bytes in the API), and a key needs neither.
func checkBounded(t *template.Template) error {
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		if name := unboundedAction(tt.Root); name != "" {
			return fmt.Errorf("parsing key template: %s actions are not allowed in a key template", name)
		}
	}
	return nil
}

// unboundedAction returns the name of the first range, template, break or
// continue action under n, or "".
func unboundedAction(n parse.Node) string {
	switch n := n.(type) {
	case *parse.RangeNode:
		return "range"
	case *parse.TemplateNode:
		return "template"
	case *parse.BreakNode:
		return "break"
	case *parse.ContinueNode:
		return "continue"
	case *parse.ListNode:
		if n == nil {
			return ""
		}
		for _, c := range n.Nodes {
			if name := unboundedAction(c); name != "" {
				return name
			}
		}
	case *parse.IfNode:
		return firstOf(unboundedAction(n.List), unboundedAction(n.ElseList))
	case *parse.WithNode:
		return firstOf(unboundedAction(n.List), unboundedAction(n.ElseList))
	}
	return ""
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

var errKeyTooLong = errors.New("key too long")

type cappedBuffer struct {
	bytes.Buffer
	limit int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if c.Len()+len(p) > c.limit {
		return 0, errKeyTooLong
	}
	return c.Buffer.Write(p)
}

// segment makes a value safe to use as (part of) one path segment.
func segment(v string) string {
	if v == "" {
		return "_"
	}
	s := strings.Map(func(r rune) rune {
		switch {
		case r == '/' || r == '\\' || unicode.IsControl(r) || r == unicode.ReplacementChar:
			return '_'
		}
		return r
	}, v)
	if s == "." || s == ".." {
		return strings.Repeat("_", len(s))
	}
	return s
}
