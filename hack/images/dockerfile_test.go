package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// dockerfile is what the final stage of a Dockerfile says about its image.
type dockerfile struct {
	base       string
	user       string
	entrypoint []string
	exposed    []string
	labels     map[string]string
	// copies maps each COPY destination to its source.
	copies map[string]string
	// builds maps each go build's -o output to its package.
	builds map[string]string
	// buildLines are the RUN lines of the build stages with go build.
	buildLines []string
}

// parseDockerfile reads the instructions this repository's Dockerfile uses:
// comments, line continuations, FROM, RUN, COPY, LABEL, EXPOSE, USER and
// ENTRYPOINT (exec form). Anything it does not know fails the test, so a new
// instruction in the Dockerfile is a reason to extend both it and the
// builder.
func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var cur strings.Builder
	for l := range strings.SplitSeq(string(raw), "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	d := dockerfile{labels: map[string]string{}, copies: map[string]string{}, builds: map[string]string{}}
	goBuildRe := regexp.MustCompile(`go build ((?:-\S+ )*)-o (\S+) (\./\S+)`)
	for _, l := range lines {
		inst, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(inst) {
		case "FROM":
			// A new stage: only the last one's instructions describe the image.
			d.base = strings.Fields(rest)[0]
			d.user, d.entrypoint, d.exposed = "", nil, nil
			d.labels, d.copies = map[string]string{}, map[string]string{}
		case "ARG", "WORKDIR":
		case "RUN":
			for _, m := range goBuildRe.FindAllStringSubmatch(rest, -1) {
				d.builds[m[2]] = m[3]
				d.buildLines = append(d.buildLines, m[0])
			}
		case "COPY":
			f := strings.Fields(rest)
			var args []string
			for _, a := range f {
				if !strings.HasPrefix(a, "--") {
					args = append(args, a)
				}
			}
			if len(args) < 2 {
				t.Fatalf("COPY %s: want sources and a destination", rest)
			}
			d.copies[args[len(args)-1]] = strings.Join(args[:len(args)-1], " ")
		case "LABEL":
			d.labels = parseLabels(t, rest, d.labels)
		case "EXPOSE":
			for p := range strings.FieldsSeq(rest) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				d.exposed = append(d.exposed, p)
			}
		case "USER":
			d.user = rest
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT %s: not the exec form: %v", rest, err)
			}
		default:
			t.Fatalf("Dockerfile instruction %s: unknown to this test and to hack/images", inst)
		}
	}
	return d
}

// parseLabels reads LABEL's key="value" pairs (values quoted, no escapes).
func parseLabels(t *testing.T, s string, into map[string]string) map[string]string {
	t.Helper()
	re := regexp.MustCompile(`^([A-Za-z0-9._-]+)="([^"\\]*)"\s*`)
	for s = strings.TrimSpace(s); s != ""; {
		m := re.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("LABEL: cannot read %q (write key=\"value\" pairs)", s)
		}
		into[m[1]] = m[2]
		s = s[len(m[0]):]
	}
	return into
}

func TestParseDockerfile(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/Dockerfile"
	content := `FROM golang AS build
RUN CGO_ENABLED=0 go build -trimpath -o /out/a ./cmd/a && \
    CGO_ENABLED=0 go build -trimpath -o /out/b ./cmd/b
USER 1:1
FROM scratch
# a comment
LABEL a="x y" \
      b="z"
COPY --from=build /out/a /a
COPY x y /z/
EXPOSE 80 53/udp
USER 2:2
ENTRYPOINT ["/a", "-v"]
`
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	d := parseDockerfile(t, path)
	got := fmt.Sprintf("%s|%s|%q|%q|%v|%v|%v", d.base, d.user, d.entrypoint, d.exposed, d.labels, d.copies, d.builds)
	want := `scratch|2:2|["/a" "-v"]|["80/tcp" "53/udp"]|map[a:x y b:z]|map[/a:/out/a /z/:x y]|map[/out/a:./cmd/a /out/b:./cmd/b]`
	if got != want {
		t.Errorf("parsed\n%s\nwant\n%s", got, want)
	}
}
