package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
)

// execIn runs command in a container, with stdin, and returns its output.
// It speaks WebSocket and falls back to SPDY, as kubectl exec does.
func (a *app) execIn(ctx context.Context, namespace, pod, container string, command []string, stdin io.Reader) (stdout, stderr string, err error) {
	if _, err := a.client(); err != nil {
		return "", "", err
	}
	cs, err := corev1client.NewForConfig(a.restCfg)
	if err != nil {
		return "", "", err
	}
	req := cs.RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: container,
			Command:   command,
			Stdin:     stdin != nil,
			Stdout:    true,
			Stderr:    true,
		}, scheme.ParameterCodec)
	spdy, err := remotecommand.NewSPDYExecutor(a.restCfg, "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	ws, err := remotecommand.NewWebSocketExecutor(a.restCfg, "GET", req.URL().String())
	if err != nil {
		return "", "", err
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return "", "", err
	}
	var out, errOut bytes.Buffer
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Stderr: &errOut})
	return out.String(), errOut.String(), err
}

// copyIntoPod streams a local file into the container through a shell,
// which, unlike kubectl cp, needs no tar in the image.
func (a *app) copyIntoPod(ctx context.Context, namespace, pod, container, local, remote string) error {
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	// wc reports what arrived, so that a cut stream is not taken for the dump.
	q := shellQuote(remote)
	script := "umask 077 && cat > " + q + " && { wc -c < " + q + " || true; }"
	stdout, stderr, err := a.execIn(ctx, namespace, pod, container, []string{"sh", "-c", script}, f)
	if err != nil {
		if msg := strings.TrimSpace(stderr); msg != "" {
			return fmt.Errorf("%v: %s", err, msg)
		}
		if strings.Contains(err.Error(), "executable file not found") || strings.Contains(err.Error(), "no such file") {
			return fmt.Errorf("the image has no shell to receive the file (%v)", err)
		}
		return err
	}
	if n, perr := strconv.ParseInt(strings.TrimSpace(stdout), 10, 64); perr == nil && n != fi.Size() {
		return fmt.Errorf("%s in the pod holds %d bytes, not %d", remote, n, fi.Size())
	}
	return nil
}

// hasProgram says whether the container has name on its PATH.
func (a *app) hasProgram(ctx context.Context, plan DebugPlan, name string) bool {
	out, _, err := a.execIn(ctx, plan.Namespace, plan.PodName, debugContainer, []string{"sh", "-c", "command -v " + shellQuote(name)}, nil)
	return err == nil && strings.TrimSpace(out) != ""
}
