package localcluster

import (
	"fmt"
	"net"
	"net/http"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago. Another
// process could take it before the caller binds it; a server that then
// fails to listen says so in its log.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitReady polls url until it answers 200, failing early if p exits.
func WaitReady(p *Process, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		if p.Exited() {
			return fmt.Errorf("%s exited before it was ready", p.Name)
		}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not ready at %s within %s (last error: %v)", p.Name, url, timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// StartVersityGW starts the versitygw S3 server (built by hack/versitygw.sh)
// on 127.0.0.1:port over the directory dir, with root credentials from the
// variables versitygw v1.8.0 reads, and waits until it answers: over https
// with tlsFiles' certificate, or over plain http when tlsFiles is nil.
func StartVersityGW(logDir, bin string, port int, dir, accessKey, secretKey string, tlsFiles *LoopbackTLS, timeout time.Duration) (*Process, error) {
	env := []string{"ROOT_ACCESS_KEY_ID=" + accessKey, "ROOT_SECRET_ACCESS_KEY=" + secretKey}
	args := []string{"--port", fmt.Sprintf("127.0.0.1:%d", port)}
	scheme, hc := "http", &http.Client{Timeout: 2 * time.Second}
	if tlsFiles != nil {
		args = append(args, "--cert", tlsFiles.CertFile, "--key", tlsFiles.KeyFile)
		scheme, hc = "https", tlsFiles.Client()
		hc.Timeout = 2 * time.Second
	}
	p, err := StartProcess("versitygw", logDir, bin, append(args, "posix", dir), env)
	if err != nil {
		return nil, err
	}
	endpoint := fmt.Sprintf("%s://127.0.0.1:%d/", scheme, port)
	deadline := time.Now().Add(timeout)
	for {
		if p.Exited() {
			return nil, fmt.Errorf("versitygw exited:\n%s", p.Tail(40))
		}
		// Any answer will do: an anonymous GET / is refused with 403.
		resp, err := hc.Get(endpoint)
		if err == nil {
			resp.Body.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.Kill()
			return nil, fmt.Errorf("versitygw did not answer within %s: %v\n%s", timeout, err, p.Tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
