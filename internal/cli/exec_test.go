package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// fakeExec is the kubelet's side of `exec` over WebSocket (v4/v5 channel
// protocols): it reads stdin to the end and answers with reply.
type fakeExec struct {
	mu       sync.Mutex
	commands [][]string
	stdin    []byte
	// reply returns stdout, stderr and the status JSON for what arrived.
	reply func(command []string, stdin []byte) (string, string, string)
}

func (f *fakeExec) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/exec") || !wsstream.IsWebSocketRequest(r) {
		http.Error(w, "want a WebSocket exec request", http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	channels := []wsstream.ChannelType{wsstream.ReadChannel, wsstream.WriteChannel, wsstream.WriteChannel, wsstream.WriteChannel, wsstream.ReadChannel}
	if q.Get("stdin") != "true" {
		channels[0] = wsstream.IgnoreChannel
	}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		"v4.channel.k8s.io": {Binary: true, Channels: channels},
		"v5.channel.k8s.io": {Binary: true, Channels: channels},
	})
	conn.SetIdleTimeout(10 * time.Second)
	_, streams, err := conn.Open(w, r)
	if err != nil {
		return
	}
	defer conn.Close()
	var in []byte
	if q.Get("stdin") == "true" {
		in, _ = io.ReadAll(streams[0])
	}
	f.mu.Lock()
	f.commands = append(f.commands, q["command"])
	f.stdin = in
	f.mu.Unlock()
	stdout, stderr, status := f.reply(q["command"], in)
	streams[1].Write([]byte(stdout))
	streams[2].Write([]byte(stderr))
	streams[3].Write([]byte(status))
}

const execSuccess = `{"metadata":{},"status":"Success"}`

func TestCopyIntoPod(t *testing.T) {
	dump := bytes.Repeat([]byte("core bytes "), 100000)
	local := filepath.Join(t.TempDir(), "core")
	if err := os.WriteFile(local, dump, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		reply   func([]string, []byte) (string, string, string)
		wantErr string
	}{
		{name: "copied", reply: func(_ []string, in []byte) (string, string, string) {
			return strings.Repeat(" ", 3) + itoa(len(in)) + "\n", "", execSuccess
		}},
		{name: "no wc", reply: func([]string, []byte) (string, string, string) { return "", "", execSuccess }},
		{name: "cut short", reply: func(_ []string, in []byte) (string, string, string) { return itoa(len(in) - 1), "", execSuccess },
			wantErr: "holds 1099999 bytes, not 1100000"},
		{name: "no shell", wantErr: "no such file", reply: func([]string, []byte) (string, string, string) {
			return "", "", `{"metadata":{},"status":"Failure","message":"exec: \"sh\": executable file not found in $PATH: no such file"}`
		}},
		{name: "disk full", wantErr: "cat: write error: No space left on device", reply: func([]string, []byte) (string, string, string) {
			return "", "cat: write error: No space left on device\n", `{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"1"}]},"message":"command terminated with non-zero exit code"}`
		}},
	} {
		fe := &fakeExec{reply: tc.reply}
		srv := httptest.NewServer(fe)
		a := &app{restCfg: &rest.Config{Host: srv.URL}, c: fake.NewClientBuilder().Build()}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := a.copyIntoPod(ctx, "team-a", "dbg", debugContainer, local, "/tmp/core")
		cancel()
		srv.Close()
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			continue
		}
		fe.mu.Lock()
		if !bytes.Equal(fe.stdin, dump) {
			t.Errorf("%s: the pod received %d bytes, want %d", tc.name, len(fe.stdin), len(dump))
		}
		if len(fe.commands) != 1 || strings.Join(fe.commands[0], " ") != "sh -c umask 077 && cat > /tmp/core && { wc -c < /tmp/core || true; }" {
			t.Errorf("%s: commands %q", tc.name, fe.commands)
		}
		fe.mu.Unlock()
	}
}

func TestHasProgram(t *testing.T) {
	for _, tc := range []struct {
		stdout, status string
		want           bool
	}{
		{"/usr/bin/gdb\n", execSuccess, true},
		{"", `{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","message":"command terminated with non-zero exit code"}`, false},
	} {
		fe := &fakeExec{reply: func([]string, []byte) (string, string, string) { return tc.stdout, "", tc.status }}
		srv := httptest.NewServer(fe)
		a := &app{restCfg: &rest.Config{Host: srv.URL}, c: fake.NewClientBuilder().Build()}
		got := a.hasProgram(context.Background(), DebugPlan{Namespace: "team-a", PodName: "dbg"}, "gdb")
		srv.Close()
		if got != tc.want {
			t.Errorf("stdout %q: hasProgram = %v, want %v", tc.stdout, got, tc.want)
		}
		if strings.Join(fe.commands[0], " ") != "sh -c command -v gdb" {
			t.Errorf("command %q", fe.commands[0])
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
