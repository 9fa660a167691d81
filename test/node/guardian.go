package node

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// GuardianEnv, when set in the environment of the test binary, makes it
// the guardian: TestMain calls RunGuardian instead of the tests.
const GuardianEnv = "COREDOG_NODE_GUARDIAN"

// guardianDone is what the suite writes to the guardian when it has
// cleaned up itself.
const guardianDone = "done\n"

// Guardian is a child process that outlives the suite: when the suite's
// end of its stdin closes without the word "done" (the suite panicked,
// timed out, was killed), it runs Cleanup on the recorded state, so the
// machine's core_pattern and core_pipe_limit are restored and the node's
// processes end whatever happened to the suite.
type Guardian struct {
	cmd *exec.Cmd
	w   io.WriteCloser
}

// StartGuardian starts the test binary again as the guardian, in a
// process group of its own (a Ctrl-C to the suite's group must not reach
// it), writing to logPath.
func StartGuardian(logPath string) (*Guardian, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), GuardianEnv+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &Guardian{cmd: cmd, w: w}, nil
}

// Done tells the guardian that the suite cleaned up, and waits for it.
func (g *Guardian) Done() {
	_, _ = io.WriteString(g.w, guardianDone)
	_ = g.w.Close()
	_ = g.cmd.Wait()
}

// RunGuardian is the guardian's main: it waits for its stdin to close.
func RunGuardian() int {
	got, _ := io.ReadAll(os.Stdin)
	if string(got) == guardianDone {
		return 0
	}
	log := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s guardian: %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, args...))
	}
	log("the suite ended without cleaning up; undoing what it recorded")
	s, err := loadState()
	if err != nil || s == nil {
		log("no record to undo (%v)", err)
		return 1
	}
	if err := Cleanup(s, log); err != nil {
		log("cleanup: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 1
	}
	log("cleaned up; core_pattern is %q again", s.CorePattern)
	return 0
}
