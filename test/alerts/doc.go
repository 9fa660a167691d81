// Package alerts tests the alerting rules the chart ships
// (charts/coredog/files/prometheus-rules.yaml) with the real promtool, built
// from its Go module by hack/promtool.sh: `promtool check rules`, and
// `promtool test rules` on testdata/alerts_test.yaml, which feeds series to
// every alert and says when it fires and when it does not. It also checks
// the kube-prometheus conventions (severity, summary, description, a
// runbook_url whose anchor docs/alerts.md has).
package alerts
