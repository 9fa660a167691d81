package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/test/localcluster"
)

// TestMetricsExported runs the manager and an agent with their production
// metrics settings (HTTPS, every scrape authenticated and authorized by the
// API server) and checks that
//   - a scrape without a token is refused (401), one with a forged token
//     too (401 or 500), and one whose
//     ServiceAccount is not bound to the metrics-reader ClusterRole of
//     config/rbac is forbidden (403), on both endpoints;
//   - with a bound ServiceAccount's token, every metric that the chart's
//     alerts (files/prometheus-rules.yaml) and dashboard (files/dashboard.json)
//     use is exported, with every label they select or group on.
func TestMetricsExported(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The suite's manager again, as the chart runs it: leader election on,
	// metrics on their secure default.
	port, err := localcluster.FreePort()
	must(t, err)
	must(t, manager.Stop(stopGrace))
	must(t, startManager("--leader-elect", "--metrics-bind-address", "127.0.0.1:"+strconv.Itoa(port)))
	t.Cleanup(func() {
		_ = manager.Stop(stopGrace)
		if err := startManager(); err != nil {
			t.Errorf("restarting the suite's manager: %v", err)
		}
	})
	n := newNode(t, "e2e-metrics", nodeOpts{agentArgs: []string{"--metrics-secure=true"}})

	reader, nobody := scraperTokens(ctx, t)
	endpoints := map[string]string{
		"manager": fmt.Sprintf("https://127.0.0.1:%d/metrics", port),
		"agent":   fmt.Sprintf("https://127.0.0.1:%d/metrics", n.metrics),
	}
	for who, url := range endpoints {
		g.Expect(scrapeStatus(url, "")).To(Equal(http.StatusUnauthorized), "%s without a token", who)
		// controller-runtime's filter answers a token the API server cannot
		// parse with 500 ("Authentication failed"): refused all the same.
		g.Expect(scrapeStatus(url, "not-a-token")).To(BeElementOf(http.StatusUnauthorized, http.StatusInternalServerError), "%s with a forged token", who)
		g.Expect(scrapeStatus(url, nobody)).To(Equal(http.StatusForbidden), "%s with a token not bound to metrics-reader", who)
	}

	// A real crash, stored: the per-dump series exist from then on.
	_, c := crash(t)
	name := coreName("web-0", "crashy", int64(c.PID))
	must(t, os.Rename(c.Core, filepath.Join(n.dir, name)))
	cd := n.waitPhase(name, coredogv1.PhaseUploaded, uploadTimeout)
	g.Expect(cd.Spec.Signature).NotTo(BeEmpty())

	uses, groupings := metricUses(t)
	g.Expect(len(uses)).To(BeNumerically(">", 20), "metrics found in the rules and the dashboard")
	var exported map[string]map[string]bool
	g.Eventually(func(g Gomega) {
		exported = map[string]map[string]bool{}
		for who, url := range endpoints {
			series, err := scrape(url, reader)
			g.Expect(err).NotTo(HaveOccurred(), who)
			maps.Copy(exported, series)
		}
		for metric := range uses {
			g.Expect(exported).To(HaveKey(metric), "a metric the alerts or the dashboard use")
		}
	}).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
	for metric, labels := range uses {
		for _, l := range labels {
			if !exported[metric][l] && !targetLabel(metric, l) {
				t.Errorf("%s is selected by label %q, which it is not exported with (it has %v)", metric, l, keys(exported[metric]))
			}
		}
	}
	for _, gr := range groupings {
		for _, l := range gr.labels {
			if !slices.ContainsFunc(gr.metrics, func(m string) bool { return exported[m][l] || targetLabel(m, l) }) {
				t.Errorf("%q groups by %q, which none of %v is exported with", gr.expr, l, gr.metrics)
			}
		}
	}
}

// targetLabel says whether Prometheus adds the label to a metric's series:
// the scrape target's labels, the PodMonitor's node and policy for the
// agents' metrics, and the ServiceMonitor's namespace (a series' own wins:
// honorLabels).
func targetLabel(metric, label string) bool {
	switch label {
	case "pod", "namespace", "instance", "job", "container", "endpoint", "service":
		return true
	case "node", "policy":
		return strings.HasPrefix(metric, "coredog_agent_")
	}
	return false
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// scraperTokens binds a ServiceAccount to the ClusterRole of
// config/rbac/metrics_reader_role.yaml and returns its token, and the token
// of one that is bound to nothing.
func scraperTokens(ctx context.Context, t *testing.T) (reader, nobody string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "config", "rbac", "metrics_reader_role.yaml"))
	must(t, err)
	role := &rbacv1.ClusterRole{}
	must(t, yaml.UnmarshalStrict(raw, role))
	role.Name = "e2e-" + role.Name
	must(t, k8s.Create(ctx, role))
	cs, err := kubernetes.NewForConfig(cp.Config)
	must(t, err)
	token := func(sa string) string {
		must(t, k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}}))
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{ExpirationSeconds: new(int64(600))},
		}, metav1.CreateOptions{})
		must(t, err)
		return tr.Status.Token
	}
	reader, nobody = token("e2e-metrics-reader"), token("e2e-metrics-nobody")
	must(t, k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "e2e-metrics-reader", Namespace: ns}},
	}))
	return reader, nobody
}

// metricsClient trusts any certificate: the endpoints' are self-signed,
// and what is under test is the token check.
var metricsClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // self-signed on loopback
}

func get(url, token string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return metricsClient.Do(req)
}

func scrapeStatus(url, token string) int {
	resp, err := get(url, token)
	if err != nil {
		return -1
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)

// scrape reads an endpoint: sample name → its label names.
func scrape(url, token string) (map[string]map[string]bool, error) {
	resp, err := get(url, token)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		if i := strings.LastIndexByte(rest, '}'); i >= 0 {
			for _, m := range labelName.FindAllStringSubmatch(rest[:i], -1) {
				out[name][m[1]] = true
			}
		}
	}
	return out, sc.Err()
}

var (
	selectorRE = regexp.MustCompile(`\b((?:coredog|controller_runtime|workqueue|leader_election)_[a-z_]+)\b(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	groupingRE = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// metricUses is every metric the alerts and the dashboard query, with the
// labels each expression selects on, and the labels each groups by.
func metricUses(t *testing.T) (uses map[string][]string, groupings []exprGrouping) {
	t.Helper()
	var exprs []string
	var rules struct {
		Groups []struct {
			Rules []struct {
				Expr string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	raw, err := os.ReadFile(filepath.Join(repoRoot, "charts", "coredog", "files", "prometheus-rules.yaml"))
	must(t, err)
	must(t, yaml.Unmarshal(raw, &rules))
	for _, gr := range rules.Groups {
		for _, r := range gr.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	raw, err = os.ReadFile(filepath.Join(repoRoot, "charts", "coredog", "files", "dashboard.json"))
	must(t, err)
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	must(t, json.Unmarshal(raw, &dash))
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	uses = map[string][]string{}
	for _, e := range exprs {
		var grouping []string
		for _, m := range groupingRE.FindAllStringSubmatch(e, -1) {
			for l := range strings.SplitSeq(m[1], ",") {
				if l = strings.TrimSpace(l); l != "" && l != "le" {
					grouping = append(grouping, l)
				}
			}
		}
		var metrics []string
		for _, m := range selectorRE.FindAllStringSubmatch(e, -1) {
			metric := m[1]
			metrics = append(metrics, metric)
			uses[metric] = append(uses[metric], []string{}...)
			for _, lm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
				uses[metric] = append(uses[metric], lm[1])
			}
		}
		if len(grouping) > 0 {
			groupings = append(groupings, exprGrouping{expr: e, metrics: metrics, labels: grouping})
		}
	}
	return uses, groupings
}

// exprGrouping is an expression's by/without labels: each must be on one of
// its metrics.
type exprGrouping struct {
	expr    string
	metrics []string
	labels  []string
}
