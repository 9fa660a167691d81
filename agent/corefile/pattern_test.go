package corefile

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		pattern   string
		wantErr   string // substring; "" means valid
		hostPID   bool
		wantSpecs string
	}{
		{pattern: "core", wantSpecs: ""},
		{pattern: "core.%h.%e.%P.%s.%t", hostPID: true, wantSpecs: "hePst"},
		{pattern: "core.%e.%p.%u.%g.%i.%I", wantSpecs: "epugiI"},
		{pattern: "100%%-%e", wantSpecs: "e"},
		{pattern: "%e%p", wantSpecs: "ep"},
		{pattern: "core.%h.%e.%P.%d", hostPID: true, wantSpecs: "hePd"},
		{pattern: "", wantErr: "empty"},
		{pattern: "core.%", wantErr: "trailing lone '%'"},
		{pattern: "core.%x", wantErr: `unsupported specifier "%x"`},
		{pattern: "core.%c", wantErr: `unsupported specifier "%c"`},
		{pattern: "core.%E", wantErr: `unsupported specifier "%E"`},
		{pattern: "/var/crash/core.%p", wantErr: "'/' at byte 0"},
		{pattern: "cores/core", wantErr: "'/' at byte 5"},
		{pattern: "|/usr/lib/systemd/systemd-coredump %P", wantErr: "pipes cores to a program"},
		{pattern: strings.Repeat("c", 127)},
		{pattern: strings.Repeat("c", 128), wantErr: "128 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			p, err := ParsePattern(tt.pattern)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidPattern) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if p.String() != tt.pattern {
				t.Errorf("String() = %q", p.String())
			}
			if p.HasHostPID() != tt.hostPID {
				t.Errorf("HasHostPID() = %v", p.HasHostPID())
			}
			for _, c := range "ephPstugiId" {
				if p.HasSpecifier(byte(c)) != strings.ContainsRune(tt.wantSpecs, c) {
					t.Errorf("HasSpecifier(%c) = %v", c, p.HasSpecifier(byte(c)))
				}
			}
		})
	}
}

func TestParseName(t *testing.T) {
	const def = "core.%h.%e.%P.%s.%t"
	ts := time.Unix(1700000000, 0).UTC()
	long := func(host, exe string) string { return "core." + host + "." + exe + ".4242.11.1700000000" }
	tests := []struct {
		name    string
		pattern string
		file    string
		want    NameFields
		wantOK  bool
	}{
		{"default", def, "core.web-0.myapp.12345.11.1700000000",
			NameFields{Hostname: "web-0", Executable: "myapp", HostPID: 12345, Signal: 11, Time: ts}, true},
		{"dump mode user", "core.%e.%P.%d", "core.su.77.1", NameFields{Executable: "su", HostPID: 77, DumpMode: 1}, true},
		{"dump mode privileged", "core.%e.%P.%d", "core.su.77.2", NameFields{Executable: "su", HostPID: 77, DumpMode: 2}, true},
		{"dump mode the kernel never dumps with", "core.%e.%P.%d", "core.su.77.0", NameFields{}, false},
		{"dump mode out of range", "core.%e.%P.%d", "core.su.77.3", NameFields{}, false},
		{"dotted executable", def, "core.web-0.python3.11.4242.6.1700000000",
			NameFields{Hostname: "web-0", Executable: "python3.11", HostPID: 4242, Signal: 6, Time: ts}, true},
		{"dotted host and executable", def, "core.web-0.svc.python3.11.4242.6.1700000000",
			NameFields{Hostname: "web-0.svc", Executable: "python3.11", HostPID: 4242, Signal: 6, Time: ts}, true},
		{"FQDN host", def, "core.ip-10-0-0-1.ec2.internal.bash.7.11.1700000000",
			NameFields{Hostname: "ip-10-0-0-1.ec2.internal", Executable: "bash", HostPID: 7, Signal: 11, Time: ts}, true},
		{"versioned executable", def, "core.node.v8.1.2.3.11.1700000000",
			// The last three digit runs are %P %s %t; the rest splits where no version
			// is cut.
			NameFields{Hostname: "node", Executable: "v8.1.2", HostPID: 3, Signal: 11, Time: ts}, true},
		{"script", def, "core.web-0.server.py.8.11.1700000000",
			NameFields{Hostname: "web-0", Executable: "server.py", HostPID: 8, Signal: 11, Time: ts}, true},
		{"ambiguous dots go to the hostname", def, "core.web-0.my.app.8.11.1700000000",
			NameFields{Hostname: "web-0.my", Executable: "app", HostPID: 8, Signal: 11, Time: ts}, true},
		{"spaces", def, "core.my host.Web Content.77.11.1700000000",
			NameFields{Hostname: "my host", Executable: "Web Content", HostPID: 77, Signal: 11, Time: ts}, true},
		{"escaped slash", def, "core.h.kworker!0:1.77.11.1700000000",
			NameFields{Hostname: "h", Executable: "kworker!0:1", HostPID: 77, Signal: 11, Time: ts}, true},
		{"non-UTF-8", def, "core.h\xff\xfe.e\x80x.1.31.1700000000",
			NameFields{Hostname: "h\xff\xfe", Executable: "e\x80x", HostPID: 1, Signal: 31, Time: ts}, true},
		{"255 bytes", def, long(strings.Repeat("h", 63)+"."+strings.Repeat("s", 157), "app-1.2.3"),
			NameFields{Hostname: strings.Repeat("h", 63) + "." + strings.Repeat("s", 157), Executable: "app-1.2.3", HostPID: 4242, Signal: 11, Time: ts}, true},
		{"comm limit decides", "core.%h.%e", "core.node1.example.com.bash",
			NameFields{Hostname: "node1.example.com", Executable: "bash"}, true},
		{"executable first", "core.%e.%h", "core.app.10.0.0.5",
			NameFields{Executable: "app", Hostname: "10.0.0.5"}, true},
		{"percent", "core%%%p", "core%123", NameFields{PID: 123}, true},
		{"percent literal only", "100%%", "100%", NameFields{}, true},
		{"ids", "core-%u-%g-%i-%I-%p-%e", "core-0-1000-3-4-5-app",
			NameFields{UID: ptr.To[int64](0), GID: ptr.To[int64](1000), TID: 3, HostTID: 4, PID: 5, Executable: "app"}, true},
		// Truly ambiguous: the earlier field takes the most.
		{"adjacent numbers", "%p%s", "123411", NameFields{PID: 12341, Signal: 1}, true},
		{"repeated specifier", "%e.%p.%e", "a.b.12.a.b", NameFields{Executable: "a.b", PID: 12}, true},
		{"repeated specifier disagrees", "%e.%p.%e", "a.12.b", NameFields{}, false},
		{"repeated number", "%p-%p", "12-12", NameFields{PID: 12}, true},
		{"repeated number disagrees", "%p-%p", "12-13", NameFields{}, false},
		{"plain core", "core", "core", NameFields{}, true},

		{"missing field", def, "core.web-0.myapp.12345.11", NameFields{}, false},
		{"other file", def, "vgcore.12345", NameFields{}, false},
		{"prefix only", def, "core.", NameFields{}, false},
		{"pid zero", def, "core.h.e.0.11.1700000000", NameFields{}, false},
		{"pid too large", def, "core.h.e.4194305.11.1700000000", NameFields{}, false},
		{"signal out of range", def, "core.h.e.12.65.1700000000", NameFields{}, false},
		{"leading zero", def, "core.h.e.012.11.1700000000", NameFields{}, false},
		{"number overflows", def, "core.h.e.12.11.99999999999999999999", NameFields{}, false},
		{"letters in number", def, "core.h.e.12.11.17000x0000", NameFields{}, false},
		{"empty executable", def, "core.h..12.11.1700000000", NameFields{}, false},
		{"empty", def, "", NameFields{}, false},
		{"slash", def, "core.h.a/b.12.11.1700000000", NameFields{}, false},
		{"NUL", def, "core.h.a\x00b.12.11.1700000000", NameFields{}, false},
		{"256 bytes", def, long(strings.Repeat("h", 224), "abcdefg"), NameFields{}, false},
		{"trailing text", "core.%p", "core.12.tmp", NameFields{}, false},
		{"uid too large", "%u", "4294967296", NameFields{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := p.Parse(tt.file)
			if ok != tt.wantOK {
				t.Fatalf("Parse(%q) ok = %v, want %v (%+v)", tt.file, ok, tt.wantOK, got)
			}
			if !fieldsEqual(got, tt.want) {
				t.Errorf("Parse(%q) =\n %s\nwant\n %s", tt.file, fmtFields(got), fmtFields(tt.want))
			}
			if ok {
				if r := p.Render(got); r != tt.file {
					t.Errorf("Render(Parse(%q)) = %q", tt.file, r)
				}
			}
		})
	}
}

func fieldsEqual(a, b NameFields) bool {
	ptrEq := func(x, y *int64) bool { return x == nil && y == nil || x != nil && y != nil && *x == *y }
	return a.Executable == b.Executable && a.PID == b.PID && a.HostPID == b.HostPID &&
		a.Hostname == b.Hostname && a.Signal == b.Signal && a.Time.Equal(b.Time) &&
		ptrEq(a.UID, b.UID) && ptrEq(a.GID, b.GID) && a.TID == b.TID && a.HostTID == b.HostTID
}

func fmtFields(f NameFields) string {
	p := func(v *int64) any {
		if v == nil {
			return "nil"
		}
		return *v
	}
	var tm any = "zero"
	if !f.Time.IsZero() {
		tm = f.Time.Unix()
	}
	return fmt.Sprintf("e=%q h=%q p=%d P=%d s=%d t=%v u=%v g=%v i=%d I=%d",
		f.Executable, f.Hostname, f.PID, f.HostPID, f.Signal, tm, p(f.UID), p(f.GID), f.TID, f.HostTID)
}

func TestRender(t *testing.T) {
	p, err := ParsePattern("core.%h.%e.%P.%s.%t.%u.%g")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    NameFields
		want string
	}{
		{"full", NameFields{Hostname: "web-0", Executable: "app", HostPID: 9, Signal: 6, Time: time.Unix(5, 0), UID: ptr.To[int64](1), GID: ptr.To[int64](2)},
			"core.web-0.app.9.6.5.1.2"},
		{"slash escaped like the kernel", NameFields{Hostname: "a/b", Executable: "x/y", HostPID: 1, Signal: 11, Time: time.Unix(5, 0)},
			"core.a!b.x!y.1.11.5.0.0"},
		{"zero values", NameFields{}, "core...0.0.0.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Render(tt.f); got != tt.want {
				t.Errorf("Render = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestParseHostileNames checks that the worst names the matcher can meet finish
// quickly: many dots and digits give text fields many places to end.
func TestParseHostileNames(t *testing.T) {
	patterns := []string{
		"core.%h.%e.%P.%s.%t",
		"%e.%h",
		"%e%h%p%s%t%u%g%i%I%P",
		"%e.%e.%e.%e.%e.%e.%e.%e.%e.%e.%e.%e.%e.%e.%e.%e.%e.%e.%e.%e",
		"%h.%p.%h.%p.%h.%p.%h.%p.%h.%p.%h.%p.%h.%p.%h.%p",
		strings.Repeat("%p.", 42),
	}
	names := []string{
		strings.Repeat(".1", 127) + "1",
		"core." + strings.Repeat("1.", 125),
		strings.Repeat("1", 255),
		strings.Repeat("a.", 127) + "a",
		"core." + strings.Repeat("a.1.", 62) + "1",
	}
	for _, pat := range patterns {
		p, err := ParsePattern(pat)
		if err != nil {
			t.Fatalf("%q: %v", pat, err)
		}
		for _, name := range names {
			start := time.Now()
			f, ok := p.Parse(name)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Parse(%q, %q...) took %v", pat, name[:20], d)
			}
			if ok && p.Render(f) != name {
				t.Errorf("Parse(%q, %q) does not render back", pat, name)
			}
		}
	}
}

// TestRenderParseRoundTrip renders kernel-like values and parses them back.
func TestRenderParseRoundTrip(t *testing.T) {
	p, err := ParsePattern("core.%h.%e.%P.%p.%s.%t.%u.%g.%i.%I")
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"web-0", "web-0.svc", "node-1.example.com", "a"}
	exes := []string{"python3.11", "java", "Web Content", "a.b", "x"}
	for _, h := range hosts {
		for _, e := range exes {
			f := NameFields{Hostname: h, Executable: e, HostPID: 4000000, PID: 1, Signal: 64,
				Time: time.Unix(1<<40, 0).UTC(), UID: ptr.To[int64](4294967295), GID: ptr.To[int64](0), TID: 2, HostTID: 3}
			name := p.Render(f)
			got, ok := p.Parse(name)
			if !ok || p.Render(got) != name {
				t.Errorf("Parse(%q) = %v, %+v", name, ok, got)
			}
		}
	}
}

func TestParsePatternNamesByte(t *testing.T) {
	_, err := ParsePattern("core.%\xff")
	if err == nil || !strings.Contains(err.Error(), `"%\xff"`) {
		t.Errorf("err = %v, want the raw byte quoted", err)
	}
}
