// Package bench is CoreDog's benchmark suite: it runs the real manager and
// agent binaries as processes against a real kube-apiserver and etcd
// (envtest) and a real S3 server (versitygw on loopback), and measures
// detection latency, pipeline throughput and memory, crash-to-stored time, a
// burst of dumps across many agents, and an idle agent's cost. When every
// benchmark has run it writes docs/benchmarks.md with the figures, the
// targets they are held against, the method and the machine.
//
// It has no tests: `go test ./...` runs nothing here. The benchmarks run
// only with -bench (`make bench`, or
// `KUBEBUILDER_ASSETS=$(hack/envtest.sh) go test -run '^$' -bench . -benchtime 1x -timeout 60m ./test/bench/`),
// and they never assert timings: a missed target is reported, not failed.
package bench
