package localcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// apiServerStopGrace is how long StopAPIServer lets the kube-apiserver shut
// down after SIGTERM before it kills it.
const apiServerStopGrace = 3 * time.Second

// StopAPIServer stops the kube-apiserver and leaves etcd, and so every
// object, running. StartAPIServer starts it again on the same address with
// the same serving certificate and client CA, so that the kubeconfig, Config
// and every client made from them work again once it is up: to a client it
// is an API server that went away and came back.
//
// envtest's APIServer.Stop deletes a certificate directory it made itself
// and forgets it, so a plain Stop and Start would come back with a new
// serving CA that no existing client trusts. StopAPIServer therefore copies
// the certificates into a directory under the control plane's Dir first and
// points the API server at that copy; the caller's cleanup of Dir removes it.
//
// With clients watching, kube-apiserver stops listening at once on SIGTERM
// but may not exit for a long time (more than envtest's 20 s stop timeout),
// so StopAPIServer sends SIGTERM itself, waits apiServerStopGrace, and then
// kills the process, as a kubelet would after a short grace period.
func (c *ControlPlane) StopAPIServer() error {
	s := c.Env.ControlPlane.APIServer
	if s == nil || s.CertDir == "" {
		return errors.New("the API server was not started by this control plane")
	}
	keep, err := os.MkdirTemp(c.Dir, "kube-apiserver-certs-")
	if err != nil {
		return err
	}
	if err := copyFiles(s.CertDir, keep); err != nil {
		return fmt.Errorf("keeping the API server's certificates: %w", err)
	}
	pid, err := childPID("kube-apiserver")
	if err != nil {
		return err
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if !waitGone(pid, apiServerStopGrace) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if !waitGone(pid, 10*time.Second) {
			return fmt.Errorf("kube-apiserver (pid %d) did not exit after SIGKILL", pid)
		}
	}
	// envtest notices the exit and only cleans up; an error here means it
	// had not noticed yet and tried to signal a process that is gone.
	_ = s.Stop()
	s.CertDir = keep
	return nil
}

// childPID finds this process's child with the given command name.
func childPID(comm string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	var found []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < open {
			continue
		}
		fields := bytes.Fields(stat[end+1:])
		if string(stat[open+1:end]) != comm || len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(string(fields[1])); ppid == self {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("found %d %s processes started by this one, want 1", len(found), comm)
	}
	return found[0], nil
}

// waitGone waits until pid has exited and been reaped (envtest waits on its
// children), at most timeout.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); os.IsNotExist(err) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartAPIServer starts the API server StopAPIServer stopped and waits until
// it is healthy.
func (c *ControlPlane) StartAPIServer() error {
	if err := c.Env.ControlPlane.APIServer.Start(); err != nil {
		return fmt.Errorf("starting kube-apiserver: %w", err)
	}
	return nil
}

// copyFiles copies the regular files of dir src into dst.
func copyFiles(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// etcdStopGrace is how long StopEtcd lets etcd shut down after SIGTERM
// before it kills it.
const etcdStopGrace = 10 * time.Second

// StopEtcd stops etcd under the running kube-apiserver, keeping its data.
// StartEtcd starts it again on the same client URL and data, so that to the
// API server it is a database that went away and came back: it answers
// with errors meanwhile and resumes its watches afterwards.
//
// envtest's Etcd.Stop deletes a data directory it made itself and forgets
// it, so a plain Stop and Start would come back empty. StopEtcd therefore
// stops the process itself (SIGTERM, then SIGKILL after etcdStopGrace),
// moves the data directory under the control plane's Dir, and points etcd
// at it; the caller's cleanup of Dir removes it.
func (c *ControlPlane) StopEtcd() error {
	e := c.Env.ControlPlane.Etcd
	if e == nil || e.DataDir == "" || e.URL == nil {
		return errors.New("etcd was not started by this control plane")
	}
	pid, err := childPID("etcd")
	if err != nil {
		return err
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if !waitGone(pid, etcdStopGrace) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if !waitGone(pid, 10*time.Second) {
			return fmt.Errorf("etcd (pid %d) did not exit after SIGKILL", pid)
		}
	}
	keep, err := os.MkdirTemp(c.Dir, "etcd-data-")
	if err != nil {
		return err
	}
	data := filepath.Join(keep, "data")
	if err := os.Rename(e.DataDir, data); err != nil {
		return fmt.Errorf("keeping etcd's data: %w", err)
	}
	// envtest notices the exit and only cleans up what is no longer there.
	_ = e.Stop()
	e.DataDir = data
	return nil
}

// StartEtcd starts the etcd StopEtcd stopped, on the same client URL and
// data, and waits until it is healthy. The API server reconnects by itself.
func (c *ControlPlane) StartEtcd() error {
	if err := c.Env.ControlPlane.Etcd.Start(); err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	return nil
}

// ChildPID returns the PID of this process's one child named comm, such as
// "kube-apiserver" or "etcd", for a caller that measures it.
func ChildPID(comm string) (int, error) { return childPID(comm) }
