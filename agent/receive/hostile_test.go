package receive

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/coredog/coredog/agent/hostdir"
	"github.com/coredog/coredog/agent/nodeguard"
	"github.com/coredog/coredog/test/attacker"
)

var kernelArgs = []string{"4242", "7", "4242", "7", "11", "1767225600", "0", "0", "web-0", "server"}

// TestInstallRefusesADirectoryAnotherUserCanChange is the attack of an
// unprivileged process (uid 1000) on a node whose core directory it can
// write: it prepares <hostPath>/.coredog before the agent starts, so as to
// replace the receiver, which the kernel runs as root on the next crash. The
// agent must refuse to install into anything it did not create, and into a
// core directory whose entries others may rename away.
func TestInstallRefusesADirectoryAnotherUserCanChange(t *testing.T) {
	cases := []struct {
		name   string
		attack string            // run as uid 1000 in the core directory %[1]s
		root   func(host string) // what root did, for the cases without an attacker step
	}{
		{name: "a directory uid 1000 made", attack: `mkdir -m 0777 %[1]s/.coredog`},
		{name: "a link uid 1000 made to its own directory", attack: `mkdir -m 0777 %[1]s/mine; ln -s %[1]s/mine %[1]s/.coredog`},
		{name: "a core directory others may write without the sticky bit", root: func(host string) { _ = os.Chmod(host, 0o777) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			host := attacker.SharedDir(t)
			if tc.attack != "" {
				attacker.Run(t, fmt.Sprintf(tc.attack, host))
			}
			if tc.root != nil {
				tc.root(host)
			}
			_, err := Install(fakeBinary(t), Config{Dir: host, FileNamePattern: "core.%e"})
			if err == nil {
				// The old agent got here: now the attacker puts its own
				// program where the kernel will run the receiver.
				evil := filepath.Join(host, "evil")
				attacker.Run(t, fmt.Sprintf(`printf '#!/bin/sh\nid > %[1]s/pwned\n' > %[2]s; chmod 0755 %[2]s
mv -f %[1]s/.coredog %[1]s/.coredog.old 2>/dev/null && mkdir %[1]s/.coredog || true
cp %[2]s %[1]s/.coredog/agent.x && mv -f %[1]s/.coredog/agent.x %[1]s/.coredog/agent`, host, evil))
				got, _ := os.ReadFile(filepath.Join(host, InstallDir, BinaryName))
				t.Fatalf("Install accepted a directory uid 1000 controls; the receiver the kernel runs as root is now %q", got)
			}
			if !errors.Is(err, hostdir.ErrUnsafe) {
				t.Fatalf("Install = %v, want hostdir.ErrUnsafe", err)
			}
			if _, err := os.Lstat(filepath.Join(host, ".coredog", BinaryName)); !os.IsNotExist(err) {
				t.Fatalf("a receiver was written despite the refusal: %v", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestReceiverTrustsNothingInADirectoryAnotherUserMade: uid 1000 made
// <hostPath>/.coredog (under an older agent, or by hand) with a configuration
// that sends cores to /etc-like directories under a name of its choosing, and
// a receive.log that links to a host file. The receiver (root, host
// namespaces) must write nothing, neither the core nor the log line.
func TestReceiverTrustsNothingInADirectoryAnotherUserMade(t *testing.T) {
	host := attacker.SharedDir(t)
	victim := t.TempDir()
	secret := filepath.Join(victim, "shadow")
	must(t, os.WriteFile(secret, []byte("root:x:0\n"), 0o600))
	cfg, err := json.Marshal(Config{Dir: victim, FileNamePattern: "cron.%p", MaxReceivers: 1})
	must(t, err)
	attacker.Run(t, fmt.Sprintf(`mkdir -m 0755 %[1]s/.coredog
printf '%%s' '%[2]s' > %[1]s/.coredog/receive.json
: > %[1]s/.coredog/slot-0
ln -s %[3]s %[1]s/.coredog/receive.log`, host, cfg, secret))

	src := strings.NewReader("* * * * * root id > /tmp/pwned\n")
	err = Main(filepath.Join(host, InstallDir), kernelArgs, src)
	if !errors.Is(err, hostdir.ErrUnsafe) {
		t.Fatalf("Main = %v, want hostdir.ErrUnsafe", err)
	}
	if src.Len() != 0 {
		t.Fatal("the stream was not drained: the kernel would wait")
	}
	entries, _ := os.ReadDir(victim)
	if len(entries) != 1 {
		t.Fatalf("the receiver wrote into the configured directory: %v", entries)
	}
	if got, _ := os.ReadFile(secret); string(got) != "root:x:0\n" {
		t.Fatalf("the receiver wrote through the planted log link: %q", got)
	}
}

// pipeReceiver is a receiver run by Main whose core is fed through a pipe.
type pipeReceiver struct {
	w    *io.PipeWriter
	r    *io.PipeReader
	err  error
	done chan struct{}
}

func startReceiver(inst string, args []string) *pipeReceiver {
	r, w := io.Pipe()
	p := &pipeReceiver{w: w, r: r, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.err = Main(inst, args, r)
		_ = r.Close()
	}()
	return p
}

func argsFor(pid string) []string {
	a := append([]string(nil), kernelArgs...)
	a[0], a[2] = pid, pid
	return a
}

// TestReceiversShareANodeWideBound: the kernel starts a receiver per crash,
// and each used to write up to maxNodeUsage whatever the others wrote. With
// two slots and 10 MiB in flight, a third receiver drains its core and exits
// (logged), two crashes of 12 MiB each together write no more than 10 MiB,
// the agent's guard sees the bytes in flight, and a count left by a receiver
// that died holds nothing back.
func TestReceiversShareANodeWideBound(t *testing.T) {
	const limit = 10 << 20
	host := t.TempDir()
	_, err := Install(fakeBinary(t), Config{Dir: host, FileNamePattern: "core.%P", MaxReceivers: 2, MaxInFlight: limit})
	must(t, err)
	inst := filepath.Join(host, InstallDir)
	// A receiver that was killed with its count written and its lock gone.
	stale, err := os.OpenFile(filepath.Join(inst, slotName(1)), os.O_WRONLY, 0)
	must(t, err)
	must(t, writeCount(stale, 9<<20))
	must(t, stale.Close())

	a, b := startReceiver(inst, argsFor("101")), startReceiver(inst, argsFor("102"))
	// A receiver that reads a byte holds a slot; one that reads a second
	// has reserved a chunk for the first (a pipe write returns once read).
	for _, p := range []*pipeReceiver{a, b} {
		for range 2 {
			if _, err := p.w.Write([]byte{0x7f}); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := InFlight(host, 2)
	must(t, err)
	if n != 2*reserveChunk {
		t.Fatalf("InFlight = %d with two receivers running, want %d (the stale count ignored)", n, 2*reserveChunk)
	}
	// The agent's guard counts them: a 4 MiB core does not fit beside them.
	g := nodeguard.NewGuard(nodeguard.Options{Dir: host, Limits: nodeguard.Limits{MaxUsage: limit},
		InFlight: func() int64 { n, _ := InFlight(host, 2); return n }})
	if ok, reason, err := g.Admit("other", filepath.Join(host, "other"), 4<<20); ok || err != nil {
		t.Fatalf("the guard admitted a core beside %d bytes in flight (%q, %v)", n, reason, err)
	}

	third := bytes.NewReader(make([]byte, 3<<20))
	if err := Main(inst, argsFor("103"), third); !errors.Is(err, ErrBusy) {
		t.Fatalf("a third receiver: %v, want ErrBusy", err)
	}
	if third.Len() != 0 {
		t.Fatal("the third receiver did not drain its core: the kernel would wait")
	}

	// Both crashes are larger than the bound. A pipe write returns once the
	// receiver has read it all; a receiver that is cut has then moved its
	// core into place and drains the rest, still holding its slot.
	var wg sync.WaitGroup
	for _, p := range []*pipeReceiver{a, b} {
		wg.Go(func() { _, _ = p.w.Write(make([]byte, 12<<20)) })
	}
	wg.Wait()
	var total int64
	for _, pid := range []string{"101", "102"} {
		st, err := os.Stat(filepath.Join(host, "core."+pid))
		must(t, err)
		if st.Size() == 0 {
			t.Fatalf("core.%s is empty", pid)
		}
		total += st.Size()
	}
	if total != limit {
		t.Fatalf("the two cores in flight hold %d bytes together, want the node-wide %d", total, limit)
	}
	if n, err := InFlight(host, 2); err != nil || n != limit {
		t.Fatalf("InFlight = %d, %v; want %d", n, err, limit)
	}
	for _, p := range []*pipeReceiver{a, b} {
		_ = p.w.Close()
		<-p.done
		if p.err != nil {
			t.Fatal(p.err)
		}
	}
	if n, err := InFlight(host, 2); err != nil || n != 0 {
		t.Fatalf("InFlight after the receivers ended = %d, %v", n, err)
	}
	log, err := os.ReadFile(filepath.Join(inst, LogName))
	must(t, err)
	for _, want := range []string{"limit of running receivers", "reached maxNodeUsage"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("receive.log lacks %q:\n%s", want, log)
		}
	}
	// The slots are free again.
	if err := Main(inst, argsFor("104"), strings.NewReader("core")); err != nil {
		t.Fatal(err)
	}
}

// TestReceiverKeepsMinNodeFree: a receiver measures free space before and
// while it writes, stops before minNodeFree, and writes nothing when there
// is no room at all.
func TestReceiverKeepsMinNodeFree(t *testing.T) {
	const total, free0, keep = 100 << 20, 30 << 20, 20 << 20
	host := t.TempDir()
	// The disk's free space is what the files in host leave.
	fstatfs = func(int) (nodeguard.FSStat, error) {
		used := int64(0)
		entries, _ := os.ReadDir(host)
		for _, e := range entries {
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
				used += fi.Size()
			}
		}
		return nodeguard.FSStat{Total: total, Free: free0 - used}, nil
	}
	t.Cleanup(func() { fstatfs = realFstatfs })
	_, err := Install(fakeBinary(t), Config{Dir: host, FileNamePattern: "core.%P", MinFree: keep})
	must(t, err)
	inst := filepath.Join(host, InstallDir)
	src := bytes.NewReader(make([]byte, 50<<20))
	must(t, Main(inst, argsFor("201"), src))
	if src.Len() != 0 {
		t.Fatal("not drained")
	}
	st, err := os.Stat(filepath.Join(host, "core.201"))
	must(t, err)
	if st.Size() == 0 || free0-st.Size() < keep {
		t.Fatalf("core of %d bytes: free space %d, under minNodeFree %d", st.Size(), free0-st.Size(), keep)
	}
	// Now the disk is at minNodeFree: the next core is not written at all.
	err = Main(inst, argsFor("202"), bytes.NewReader(make([]byte, 1<<20)))
	if !errors.Is(err, errNoRoom) {
		t.Fatalf("Main at minNodeFree = %v", err)
	}
	if _, err := os.Stat(filepath.Join(host, "core.202")); !os.IsNotExist(err) {
		t.Fatalf("core.202: %v", err)
	}
	log, _ := os.ReadFile(filepath.Join(inst, LogName))
	if !strings.Contains(string(log), "minNodeFree") {
		t.Errorf("receive.log does not say minNodeFree:\n%s", log)
	}
}
