// Command demo runs CoreDog end to end on one machine, as `make demo` does:
// a real kube-apiserver and etcd (envtest, built by hack/envtest.sh), the
// manager and a node agent as plain processes, a sample CoreDumpPolicy
// applied with kubectl, a Pod object for the agent's node, and a real crash
// whose core the kernel writes. It then waits until the dump is Uploaded,
// shows what kubectl shows, and checks that the stored object decompresses
// to exactly the bytes the kernel wrote.
//
// With KEEP=1 (or -keep) it leaves everything running until Ctrl-C and
// prints the KUBECONFIG to use; with S3=1 (or -s3) it stores into a local
// S3 server (versitygw, built by hack/versitygw.sh) instead of a directory.
//
// There is no kubelet: the manager's DaemonSet never gets pods, so the demo
// starts the agent itself, with the Secret the manager made for it written
// to a directory as the kubelet would mount it, and it sets the Pod's status
// as a kubelet would report it. Every process's log is in the demo
// directory's logs/; on failure the demo names the step, prints the end of
// each log and keeps the directory.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

func main() {
	o := options{Out: os.Stdout}
	flag.StringVar(&o.Repo, "repo", "", "Repository root (config/, hack/); default: found from the working directory.")
	flag.StringVar(&o.BinDir, "bin", "", "Directory holding the manager and agent binaries; default: <repo>/bin (make build).")
	flag.StringVar(&o.Assets, "assets", "", "Directory with kube-apiserver, etcd and kubectl; default: what hack/envtest.sh prints (it builds them when missing).")
	flag.StringVar(&o.WorkDir, "workdir", "", "Where the demo makes its temporary directory; default: the system's temporary directory.")
	flag.BoolVar(&o.Keep, "keep", envBool("KEEP"), "Leave everything running until Ctrl-C (also KEEP=1).")
	flag.BoolVar(&o.S3, "s3", envBool("S3"), "Store into a local S3 server (versitygw) instead of a directory (also S3=1).")
	flag.Parse()
	if o.Repo == "" {
		repo, err := findRepo()
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(2)
		}
		o.Repo = repo
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

// envBool reads KEEP=1 / S3=true style switches.
func envBool(name string) bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv(name))) {
	case "1", "true", "yes", "on", "y":
		return true
	}
	return false
}

// findRepo walks up from the working directory to CoreDog's go.mod.
func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isRepo(dir) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the CoreDog repository (no go.mod for github.com/coredog/coredog above the working directory); run it with `make demo` or -repo")
		}
		dir = parent
	}
}

func isRepo(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if strings.TrimSpace(s.Text()) == "module github.com/coredog/coredog" {
			return true
		}
	}
	return false
}
