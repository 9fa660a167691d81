// Package e2e is CoreDog's end-to-end suite: the manager and agent binaries
// run as processes against an envtest control plane (a real kube-apiserver
// and etcd, built by hack/envtest.sh), storing into a real S3 server on
// loopback (versitygw, built by hack/versitygw.sh), with real kernel core
// dumps, kubectl apply and kubectl get. Each test injects one kind of event
// or failure and says in its comment what it checks.
//
// Run it with `make test`, or with
//
//	KUBEBUILDER_ASSETS=$(hack/envtest.sh) go test -race -count=1 ./test/e2e/
//
// The suite builds the binaries itself; it needs gcc for the crashing
// program and fails when KUBEBUILDER_ASSETS is not set. Process logs go to
// files; a failing test prints the tail of each.
package e2e
