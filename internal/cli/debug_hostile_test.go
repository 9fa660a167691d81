package cli

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// TestDebugStepsQuoteHostileNames is the attack of a crashing program that
// names itself (comm, argv[0]) to break out of the commands `kubectl coredog
// debug` prints for a user to paste. Every printed command line (and every
// command quoted in a comment) is run by bash with a fake kubectl on PATH
// that records its arguments and runs what follows `--` when it is `sh`, as
// the pod would. No injected command may run, the program's name must reach
// kubectl and sh as one argument, unchanged, and no printed line may carry a
// control character.
func TestDebugStepsQuoteHostileNames(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to run the printed commands: %v", err)
	}
	for _, exe := range []string{
		`x'; touch PWNED; '`,
		`$(touch PWNED)`,
		"`touch PWNED`",
		"srv\ntouch PWNED",
		"srv\x1b]0;title\x07",
		"srv\xff\xfe",
		`a\'b"c`,
	} {
		t.Run(strings.ToValidUTF8(exe, "?"), func(t *testing.T) {
			dir := t.TempDir()
			// Each call's arguments go to a file of their own, NUL-separated.
			kubectl := "#!/bin/sh\n" +
				"out=\"$CALLS/$(ls \"$CALLS\" | wc -l)\"\n" +
				"for a in \"$@\"; do printf '%s\\0' \"$a\" >> \"$out\"; done\n" +
				"while [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done\n" +
				"[ \"$1\" = -- ] && shift\n" +
				"[ \"$1\" = sh ] && [ \"$2\" = -c ] && exec sh -c \"$3\"\n" +
				"exit 0\n"
			calls := filepath.Join(dir, "calls")
			if err := os.Mkdir(calls, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "kubectl"), []byte(kubectl), 0o755); err != nil {
				t.Fatal(err)
			}
			cd := testDump("core-a", 0, func(cd *coredogv1.CoreDump) {
				cd.Spec.ELF = nil
				cd.Spec.Process.Executable = exe
			})
			p, err := PlanDebug(&cd, "", "", "")
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			RenderDebugSteps(&out, p, "")
			var script strings.Builder
			sc := bufio.NewScanner(&out)
			for sc.Scan() {
				line := sc.Text()
				if safe(line) != line {
					t.Errorf("printed line carries a control character or invalid UTF-8: %q", line)
				}
				// A comment may end in a command to run.
				if _, cmd, ok := strings.Cut(line, "find it with: "); ok && strings.HasPrefix(line, "#") {
					line = cmd
				}
				if strings.HasPrefix(line, "kubectl ") {
					script.WriteString(line + "\n")
				}
			}
			run := exec.Command(bash, "-c", script.String())
			run.Dir = dir
			run.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "CALLS=" + calls}
			if b, err := run.CombinedOutput(); err != nil {
				t.Fatalf("running the printed commands: %v\n%s\n%s", err, b, script.String())
			}
			if _, err := os.Stat(filepath.Join(dir, "PWNED")); err == nil {
				t.Fatalf("a printed command ran code from the program's name:\n%s", script.String())
			}
			files, err := os.ReadDir(calls)
			if err != nil {
				t.Fatal(err)
			}
			var gdbSawExe, shSawExe bool
			var recorded []string
			for _, f := range files {
				call, err := os.ReadFile(filepath.Join(calls, f.Name()))
				if err != nil {
					t.Fatal(err)
				}
				recorded = append(recorded, string(call))
				argv := strings.Split(strings.TrimSuffix(string(call), "\x00"), "\x00")
				for i, a := range argv {
					if a == "gdb" && i+1 < len(argv) && argv[i+1] == exe {
						gdbSawExe = true
					}
					if a == "command -v "+shellQuote(exe) {
						shSawExe = true
					}
				}
			}
			if !gdbSawExe || !shSawExe {
				t.Fatalf("the program's name did not reach gdb (%v) and sh (%v) as one argument:\n%q", gdbSawExe, shSawExe, recorded)
			}
		})
	}
}
