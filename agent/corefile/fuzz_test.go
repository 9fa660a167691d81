package corefile

import (
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	seeds := []struct{ pattern, name string }{
		{"core.%h.%e.%P.%s.%t", "core.web-0.myapp.12345.11.1700000000"},
		{"core.%h.%e.%P.%s.%t", "core.web-0.svc.python3.11.4242.6.1700000000"},
		{"core.%h.%e.%P.%s.%t", "core.h\xff.Web Content.1.11.1"},
		{"core.%e.%p.%u.%g.%i.%I", "core.a.b.1.0.0.2.3"},
		{"%e%h%p%s", "abc123411"},
		{"%e.%p.%e", "a.b.12.a.b"},
		{"100%%-%e", "100%-x"},
		{"core", "core"},
		{"%h.%p.%h.%p", strings.Repeat(".1", 60)},
	}
	for _, s := range seeds {
		f.Add(s.pattern, s.name)
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			if p != nil {
				t.Fatal("pattern returned with an error")
			}
			return
		}
		fields, ok := p.Parse(name)
		if ok {
			// Everything Parse accepts, the kernel could have written from these fields.
			if r := p.Render(fields); r != name {
				t.Fatalf("Render(Parse(%q)) = %q with pattern %q", name, r, pattern)
			}
		} else if (fields != NameFields{}) {
			t.Fatalf("fields filled for a name that does not match: %+v", fields)
		}
		// Without repeated specifiers the memoized matcher and the exhaustive one must
		// pick the same parse; the exhaustive one is cheap only for short names.
		if !p.repeats && len(name) <= 40 && name != "" && len(name) <= maxNameLen && !strings.ContainsAny(name, "/\x00") {
			dp, okDP := p.matchDP(name)
			bt, okBT, complete := p.matchBacktrack(name)
			if complete && (okDP != okBT || !slices.Equal(dp, bt)) {
				t.Fatalf("pattern %q name %q: DP %v %v, backtracking %v %v", pattern, name, dp, okDP, bt, okBT)
			}
		}
	})
}

func FuzzReadCore(f *testing.F) {
	for _, s := range []synthCore{synthX86(), synthARM64(), synth386()} {
		f.Add(s.bytes())
	}
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Add([]byte{})
	// A real kernel core trimmed to its headers and notes (the PT_LOAD data is what
	// makes it large), so the fuzzer starts from the kernel's exact layout. Fuzz
	// workers get their inputs from the coordinator, and are killed without running
	// TestMain's cleanup, so only the coordinator (or a plain test run) crashes the
	// program.
	if fw := flag.Lookup("test.fuzzworker"); fw == nil || fw.Value.String() != "true" {
		full, err := os.ReadFile(cCore(f).core)
		if err != nil {
			f.Fatal(err)
		}
		if start, end := noteExtent(full); start < end && end <= uint64(len(full)) {
			f.Add(full[:end])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ReadCore(bytes.NewReader(data), int64(len(data)))
		if errors.Is(err, ErrNotELF) || errors.Is(err, ErrNotCore) {
			if c != nil {
				t.Fatalf("Core returned with %v", err)
			}
			return
		}
		if err == nil && c == nil {
			t.Fatal("nil Core without an error")
		}
		if c == nil {
			return
		}
		if c.Threads < 0 || len(c.Mappings) > maxFileEntries || len(c.CommandLine) > 80 {
			t.Fatalf("implausible Core: %d threads, %d mappings, %d-byte command line", c.Threads, len(c.Mappings), len(c.CommandLine))
		}
		if c.CrashModule != "" {
			found := false
			for _, m := range c.Mappings {
				if c.PC >= m.Start && c.PC < m.End && moduleName(m.Path) == c.CrashModule {
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("CrashModule %q does not contain PC %#x", c.CrashModule, c.PC)
			}
		}
		if c.BuildID != "" && c.CrashModule == "" {
			t.Fatal("build-id without a module")
		}
		if c.HasFaultAddress && !slices.Contains([]int{4, 5, 7, 8, 11}, c.Signal) {
			t.Fatalf("fault address for signal %d", c.Signal)
		}
	})
}

func FuzzContainerID(f *testing.F) {
	for _, s := range []string{
		"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + puidSystemd + ".slice/cri-containerd-" + cid + ".scope\n",
		"12:memory:/kubepods/burstable/pod" + puid + "/" + cid + "\n1:name=systemd:/kubepods/burstable/pod" + puid + "/" + cid + "\n",
		"0::/kubepods.slice/kubepods-pod" + puidSystemd + ".slice/crio-conmon-" + cid + ".scope\n",
		"0::/system.slice/docker-" + cid + ".scope\n",
		"11:devices:/docker/" + cid + "\n",
		"0::/\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, ok := ContainerID(data)
		if ok != (info.ID != "") {
			t.Fatalf("ok %v with ID %q", ok, info.ID)
		}
		if ok && !isContainerID(info.ID) {
			t.Fatalf("ID %q is not 64 hex characters", info.ID)
		}
		switch info.Runtime {
		case "", RuntimeContainerd, RuntimeCRIO, RuntimeDocker:
		default:
			t.Fatalf("runtime %q", info.Runtime)
		}
		if info.PodUID != "" && !isPodUID(info.PodUID) {
			t.Fatalf("pod UID %q", info.PodUID)
		}
		if !ok && info.Runtime != "" {
			t.Fatalf("runtime %q without an ID", info.Runtime)
		}
	})
}

// noteExtent is the PT_NOTE extent of a core, read with debug/elf; zero if none.
func noteExtent(core []byte) (start, end uint64) {
	ef, err := elf.NewFile(bytes.NewReader(core))
	if err != nil {
		return 0, 0
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_NOTE {
			return p.Off, p.Off + p.Filesz
		}
	}
	return 0, 0
}

// FuzzReadProcess: the note reader that also keeps every thread's
// NT_PRSTATUS place and the PT_LOAD segments for unwinding.
func FuzzReadProcess(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01"), 4)
	f.Fuzz(func(t *testing.T, data []byte, maxThreads int) {
		p, _ := ReadProcess(bytes.NewReader(data), int64(len(data)), maxThreads%1024)
		if p == nil {
			return
		}
		if len(p.ThreadNotes) > max(maxThreads%1024, 0) || len(p.ThreadNotes) > p.Threads {
			t.Fatalf("%d thread notes kept of %d, limit %d", len(p.ThreadNotes), p.Threads, maxThreads%1024)
		}
		for _, n := range p.ThreadNotes {
			if n.Offset+n.Size > uint64(len(data)) {
				t.Fatalf("note at %d+%d past the end %d", n.Offset, n.Size, len(data))
			}
		}
		for _, m := range p.Mappings {
			_ = p.BuildID(m)
		}
	})
}
