package alerts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var (
	repoRoot  = filepath.Join("..", "..")
	rulesFile = filepath.Join(repoRoot, "charts", "coredog", "files", "prometheus-rules.yaml")
	unitTests = filepath.Join("testdata", "alerts_test.yaml")
)

// promtool builds promtool once (hack/promtool.sh caches it outside the
// repository) and returns its path; a failed build fails the test.
func promtool(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "promtool.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/promtool.sh: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func TestPromtoolCheckRules(t *testing.T) {
	runPromtool(t, "check", "rules", "--lint=all", "--lint-fatal", rulesFile)
}

func TestPromtoolTestRules(t *testing.T) {
	runPromtool(t, "test", "rules", "--run=.*", unitTests)
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

type unitTestFile struct {
	RuleFiles          []string `json:"rule_files"`
	EvaluationInterval string   `json:"evaluation_interval"`
	Tests              []struct {
		Name          string `json:"name"`
		Interval      string `json:"interval"`
		InputSeries   []any  `json:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string `json:"eval_time"`
			AlertName string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Every alert follows kube-prometheus's conventions, has a runbook in
// docs/alerts.md, and is tested both firing and not firing.
func TestAlertConventions(t *testing.T) {
	var rules ruleFile
	readYAML(t, rulesFile, &rules)
	var tests unitTestFile
	readYAML(t, unitTests, &tests)
	if !slices.Contains(tests.RuleFiles, "../../../charts/coredog/files/prometheus-rules.yaml") {
		t.Errorf("testdata/alerts_test.yaml tests %v, not the chart's rule file", tests.RuleFiles)
	}
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "alerts.md"))
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)$`).FindAllStringSubmatch(string(doc), -1) {
		headings[strings.ToLower(m[1])] = true
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
			} else {
				silent[a.AlertName] = true
			}
		}
	}
	var alerts int
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			anchor := strings.ToLower(r.Alert)
			if want := "https://github.com/coredog/coredog/blob/main/docs/alerts.md#" + anchor; r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !headings[anchor] {
				t.Errorf("%s: docs/alerts.md has no section \"## %s\"", r.Alert, r.Alert)
			}
			if !fires[r.Alert] || !silent[r.Alert] {
				t.Errorf("%s: testdata/alerts_test.yaml must test it firing (%v) and not firing (%v)", r.Alert, fires[r.Alert], silent[r.Alert])
			}
		}
	}
	if alerts < 10 {
		t.Errorf("%d alerts in %s; the file did not parse as expected", alerts, rulesFile)
	}
}
