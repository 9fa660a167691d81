// Package install tests CoreDog's install paths: the Helm chart in
// charts/coredog and the kustomize bases and samples in config/. It owns
// no code that ships; its tests read those files, render them the way helm
// and kustomize do (helm's own engine and sigs.k8s.io/kustomize/api, the
// kustomize kubectl embeds, as libraries), decode
// every object strictly into its Kubernetes type, pin the RBAC rules, and
// have a real API server (envtest) validate every object with a server-side
// dry run. It must not change the files it checks.
package install
