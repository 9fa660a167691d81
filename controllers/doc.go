// Package controllers holds CoreDog's reconcilers and the manager wiring that
// both cmd/manager and the envtest suites (controllers/integration) use, so
// that tests run the manager exactly as it runs in a cluster. Each reconciler
// has one job, in files named after it; decisions are pure functions in this
// package or in a sub-package named for the idea (agentset renders agents,
// throttle owns the rate limit, upload moves a dump into storage).
package controllers
