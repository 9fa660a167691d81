// Package integration holds the controllers' envtest suites: the real
// manager, wired by controllers.Setup with the options cmd/manager uses, runs
// against a kube-apiserver and etcd from KUBEBUILDER_ASSETS (make test builds
// them with hack/envtest.sh). Tests that need no API server live beside the
// code they test, so that go test ./controllers/... runs them without envtest.
package integration
