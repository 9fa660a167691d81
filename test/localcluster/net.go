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
