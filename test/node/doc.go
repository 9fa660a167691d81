// Package node runs a real Kubernetes node on this machine for the
// real-node suite: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler (built by hack/envtest.sh --node), containerd and runc
// from the distribution (hack/node-packages.sh), and a kubelet, all in a
// network and a mount namespace of their own. The host sees one veth
// (10.213.0.1, the node is 10.213.0.2) and the directories under
// StateRoot; the node's mount namespace covers the paths a kubelet and
// containerd write whatever their configuration says with tmpfs, and
// shows the kubelet the kernel defaults it insists on without changing
// the machine's.
//
// Everything a run changes outside its namespaces is recorded in
// StateFile before it is changed (processes, cgroups, the veth, the
// kernel's core_pattern and core_pipe_limit), so that Cleanup can undo
// exactly that: at the end of the suite, from the guardian process when
// the suite dies (a panic, a test timeout, SIGKILL), or at the start of
// the next run. The tests are in files with the build tag nodesuite
// (`make test-node`).
package node
