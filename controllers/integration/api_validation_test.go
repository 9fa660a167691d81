package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

const apiTestNamespace = "api-tests"

func validPolicy(name string) *coredogv1.CoreDumpPolicy {
	return newPolicy(name, "/var/lib/cores-"+name)
}

func validCoreDump(name string) *coredogv1.CoreDump {
	return &coredogv1.CoreDump{
		// Outside the controller's namespace, so that no reconciler touches
		// these objects while the API tests look at them.
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: apiTestNamespace},
		Spec: coredogv1.CoreDumpSpec{
			PolicyName: "p", NodeName: "node-1", FileName: "core.web-0.server.4242.11.1767225600",
			Size: 43 << 20, DisplaySize: "43Mi", DetectedBy: coredogv1.DetectedByWatch,
			DetectedAt: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
			Process:    coredogv1.ProcessInfo{Executable: "server", Signal: 11, SignalName: "SIGSEGV", HostPID: 4242},
			Signature:  "0123456789ab",
		},
	}
}

// TestAPIRejectsInvalidObjects checks that the API server itself refuses bad
// objects, with a message that says what to fix.
func TestAPIRejectsInvalidObjects(t *testing.T) {
	long := strings.Repeat("x", 100)
	cases := []struct {
		name   string
		obj    client.Object
		mutate func(client.Object)
		want   string
	}{
		{"relative hostPath", validPolicy("v1"), func(o client.Object) { pol(o).Spec.HostPath = "var/cores" }, "hostPath must be an absolute path"},
		{"dot-dot in hostPath", validPolicy("v2"), func(o client.Object) { pol(o).Spec.HostPath = "/var/../etc" }, "must not contain '.' or '..' segments"},
		{"unknown specifier", validPolicy("v3"), func(o client.Object) { pol(o).Spec.FileNamePattern = "core.%e.%z" }, "fileNamePattern may use only the specifiers"},
		{"slash in file name pattern", validPolicy("v4"), func(o client.Object) { pol(o).Spec.FileNamePattern = "cores/core.%e" }, "no '/'"},
		{"core_pattern too long with Manage", validPolicy("v5"), func(o client.Object) {
			pol(o).Spec.CorePattern = coredogv1.CorePatternManage
			pol(o).Spec.HostPath = "/" + long
			pol(o).Spec.FileNamePattern = "core." + strings.Repeat("%e", 12)
		}, "at most 127 bytes"},
		{"hostPath too long for a pipe pattern", validPolicy("v5p"), func(o client.Object) {
			pol(o).Spec.CorePattern = coredogv1.CorePatternPipe
			pol(o).Spec.HostPath = "/" + long
		}, "with corePattern Pipe, hostPath must be at most 73 bytes"},
		{"unsupported storage scheme", validPolicy("v6"), func(o client.Object) { pol(o).Spec.Storage.URL = "http://bucket/x" }, "storage.url must start with s3://, gs://, azblob:// or file://"},
		{"relative file storage", validPolicy("v7"), func(o client.Object) { pol(o).Spec.Storage.URL = "file://relative/dir" }, "needs an absolute path"},
		{"negative poll interval", validPolicy("v8"), func(o client.Object) {
			pol(o).Spec.Detection.PollInterval = &metav1.Duration{Duration: -time.Second}
		}, "pollInterval must be between 0s and 1h"},
		{"zero settle time", validPolicy("v9"), func(o client.Object) {
			pol(o).Spec.Detection.SettleTime = &metav1.Duration{}
		}, "settleTime must be positive"},
		{"zero ttl", validPolicy("v10"), func(o client.Object) { pol(o).Spec.Retention.TTL = &metav1.Duration{} }, "retention.ttl must be positive"},
		{"zero rate window", validPolicy("v11"), func(o client.Object) { pol(o).Spec.Limits.RateLimit.Window = &metav1.Duration{} }, "rateLimit.window must be positive"},
		{"negative rate count", validPolicy("v12"), func(o client.Object) { pol(o).Spec.Limits.RateLimit.Count = ptr.To[int32](-1) }, "should be greater than or equal to 0"},
		{"bad minNodeFree", validPolicy("v13"), func(o client.Object) { pol(o).Spec.Limits.MinNodeFree = "150%" }, "minNodeFree must be a size such as 2Gi or a percentage"},
		{"zero maxDumpSize", validPolicy("v14"), func(o client.Object) { pol(o).Spec.Limits.MaxDumpSize = new(resource.MustParse("0")) }, "maxDumpSize must be positive"},
		{"unknown compression", validPolicy("v15"), func(o client.Object) { pol(o).Spec.Storage.Compression = "Brotli" }, `supported values: "Zstd", "Gzip", "None"`},
		{"unknown core pattern mode", validPolicy("v16"), func(o client.Object) { pol(o).Spec.CorePattern = "Sometimes" }, `supported values: "Observe", "Manage", "Pipe"`},
		{"zero skippedTTL", validPolicy("v17"), func(o client.Object) { pol(o).Spec.Retention.SkippedTTL = &metav1.Duration{} }, "retention.skippedTTL must be positive"},
		{"zero node burst", validPolicy("v18"), func(o client.Object) { pol(o).Spec.Limits.CoreDumps.NodeBurst = ptr.To[int32](0) }, "should be greater than or equal to 1"},
		{"huge signature rate", validPolicy("v19"), func(o client.Object) {
			pol(o).Spec.Limits.CoreDumps.SignaturePerHour = ptr.To[int32](1 << 30)
		}, "should be less than or equal to 360000"},
		{"policy name too long", validPolicy(strings.Repeat("p", 41)), func(client.Object) {}, "at most 40 characters"},
		{"range in key template", validPolicy("v17"), func(o client.Object) {
			pol(o).Spec.Storage.KeyTemplate = "{{range 1000000000}}{{end}}{{.Name}}"
		}, "keyTemplate must not use range, template, block, break or continue"},
		{"recursive key template", validPolicy("v18"), func(o client.Object) {
			pol(o).Spec.Storage.KeyTemplate = `{{define "k"}}{{- template "k"}}{{end}}{{.Name}}`
		}, "keyTemplate must not use range, template, block, break or continue"},
		{"key template too long", validPolicy("v19"), func(o client.Object) {
			pol(o).Spec.Storage.KeyTemplate = strings.Repeat("{{.Name}}", 114)
		}, "spec.storage.keyTemplate: Too long"},
		{"storage url too long", validPolicy("v20"), func(o client.Object) {
			pol(o).Spec.Storage.URL = "s3://bucket/" + strings.Repeat("k", 2048)
		}, "spec.storage.url: Too long"},
		{"too many node selector labels", validPolicy("v21"), func(o client.Object) {
			pol(o).Spec.NodeSelector = map[string]string{}
			for i := range 33 {
				pol(o).Spec.NodeSelector["l"+strings.Repeat("x", i)] = "y"
			}
		}, "spec.nodeSelector: Too many"},
		// Quantity parsing grows with a decimal exponent's value: only plain sizes are accepted.
		{"minNodeFree with a huge negative exponent", validPolicy("v23"), func(o client.Object) { pol(o).Spec.Limits.MinNodeFree = "1E-10000000" }, "minNodeFree must be a size such as 2Gi or a percentage"},
		{"minNodeFree zero with a huge exponent", validPolicy("v24"), func(o client.Object) { pol(o).Spec.Limits.MinNodeFree = "0E1000000000000000000" }, "minNodeFree must be a size such as 2Gi or a percentage"},
		{"huge rate limit", validPolicy("v22"), func(o client.Object) { pol(o).Spec.Limits.RateLimit.Count = ptr.To[int32](1 << 30) }, "should be less than or equal to 100000"},
		{"core dump with a huge file name", validCoreDump("c4"), func(o client.Object) { cd(o).Spec.FileName = strings.Repeat("f", 4097) }, "spec.fileName: Too long"},
		{"core dump with an unknown dump mode", validCoreDump("c5"), func(o client.Object) { cd(o).Spec.Process.DumpMode = "Root" }, `supported values: "User", "Privileged"`},
		{"core dump with an impossible signal", validCoreDump("c6"), func(o client.Object) { cd(o).Spec.Process.Signal = 1 << 20 }, "spec.process.signal"},
		{"core dump without node", validCoreDump("c1"), func(o client.Object) { cd(o).Spec.NodeName = "" }, "spec.nodeName"},
		{"core dump with unknown detection source", validCoreDump("c2"), func(o client.Object) { cd(o).Spec.DetectedBy = "Guess" }, `supported values: "Watch", "Poll", "Rescan"`},
		{"core dump with negative size", validCoreDump("c3"), func(o client.Object) { cd(o).Spec.Size = -1 }, "spec.size"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.mutate(tc.obj)
			err := k8s.Create(context.Background(), tc.obj)
			if err == nil {
				_ = k8s.Delete(context.Background(), tc.obj)
				t.Fatalf("the API server accepted %s", tc.name)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant an Invalid error containing %q", err, tc.want)
			}
		})
	}
}

func pol(o client.Object) *coredogv1.CoreDumpPolicy { return o.(*coredogv1.CoreDumpPolicy) }
func cd(o client.Object) *coredogv1.CoreDump        { return o.(*coredogv1.CoreDump) }

func TestCoreDumpSpecIsImmutable(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	obj := validCoreDump("immutable")
	g.Expect(k8s.Create(ctx, obj)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(ctx, obj) })

	obj.Spec.Size++
	err := k8s.Update(ctx, obj)
	g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("CoreDump spec is immutable"))

	// The series the agent writes only grows, from a fixed first crash.
	first := metav1.NewTime(time.Unix(1767225600, 0))
	g.Eventually(func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		obj.Series = &coredogv1.CoreDumpSeries{Count: 5, OtherCount: 2, FirstObserved: first, LastObserved: first}
		return k8s.Update(ctx, obj)
	}, timeout, interval).Should(Succeed())
	for what, s := range map[string]coredogv1.CoreDumpSeries{
		"a smaller count":       {Count: 4, OtherCount: 2, FirstObserved: first, LastObserved: first},
		"a smaller other count": {Count: 5, FirstObserved: first, LastObserved: first},
		"another first crash":   {Count: 6, OtherCount: 2, FirstObserved: metav1.NewTime(first.Add(time.Hour)), LastObserved: first},
	} {
		var cur coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), &cur)).To(Succeed())
		cur.Series = &s
		err := k8s.Update(ctx, &cur)
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: got %v", what, err)
		g.Expect(err.Error()).To(ContainSubstring("series counts only grow"), what)
	}
	var cur coredogv1.CoreDump
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(obj), &cur)).To(Succeed())
	cur.Series = nil
	err = k8s.Update(ctx, &cur)
	g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "dropping the series: got %v", err)

	// Labels and status stay writable (the controller writes them too, so retry on conflicts).
	g.Eventually(func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		obj.Labels = map[string]string{"example.com/triage": "done"}
		return k8s.Update(ctx, obj)
	}, timeout, interval).Should(Succeed())
	g.Eventually(func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		obj.Status.Message = "checked by hand"
		return k8s.Status().Update(ctx, obj)
	}, timeout, interval).Should(Succeed())
}

// TestPrinterColumns asks for the Table that `kubectl get` asks for and checks
// the columns and the cells.
func TestPrinterColumns(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	obj := validCoreDump("columns")
	obj.Spec.Process.DumpMode = coredogv1.DumpModePrivileged
	g.Expect(k8s.Create(ctx, obj)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(ctx, obj) })
	obj.Status = coredogv1.CoreDumpStatus{
		Phase: coredogv1.PhaseUploaded,
		Pod: &coredogv1.PodReference{Namespace: "team-a", Name: "web-0", Container: "app",
			ResolvedBy: coredogv1.ResolvedByHostname},
		Storage: &coredogv1.StorageStatus{URL: "s3://cores/team-a/web-0/x.zst", Key: "team-a/web-0/x.zst"},
	}
	g.Expect(k8s.Status().Update(ctx, obj)).To(Succeed())

	table := getTable(t, "/apis/coredog.io/v1alpha1/namespaces/"+apiTestNamespace+"/coredumps")
	g.Expect(table.columns).To(Equal([]string{"Name", "Namespace", "Pod", "Container", "Executable", "Signal", "Size", "Phase", "Age", "Node", "Signature", "Location", "Dump Mode"}))
	g.Expect(table.priority["Node"]).To(Equal(int64(1)))
	g.Expect(table.priority["Dump Mode"]).To(Equal(int64(1)))
	g.Expect(table.priority["Signature"]).To(Equal(int64(1)))
	g.Expect(table.priority["Location"]).To(Equal(int64(1)))
	g.Expect(table.priority["Pod"]).To(Equal(int64(0)))
	row := table.row("columns")
	g.Expect(row).NotTo(BeNil())
	g.Expect(row["Namespace"]).To(Equal("team-a"))
	g.Expect(row["Pod"]).To(Equal("web-0"))
	g.Expect(row["Container"]).To(Equal("app"))
	g.Expect(row["Executable"]).To(Equal("server"))
	g.Expect(row["Signal"]).To(Equal("SIGSEGV"))
	g.Expect(row["Size"]).To(Equal("43Mi"))
	g.Expect(row["Phase"]).To(Equal("Uploaded"))
	g.Expect(row["Node"]).To(Equal("node-1"))
	g.Expect(row["Signature"]).To(Equal("0123456789ab"))
	g.Expect(row["Location"]).To(Equal("s3://cores/team-a/web-0/x.zst"))
	g.Expect(row["Dump Mode"]).To(Equal("Privileged"))

	p := createPolicy(t, validPolicy("columns"))
	g.Eventually(func(g Gomega) {
		g.Expect(getPolicy(g, p.Name).Status.DaemonSetName).NotTo(BeEmpty())
	}, timeout, interval).Should(Succeed())
	ptable := getTable(t, "/apis/coredog.io/v1alpha1/coredumppolicies")
	g.Expect(ptable.columns).To(Equal([]string{"Name", "Ready", "Desired", "Storage", "Age"}))
	prow := ptable.row("columns")
	g.Expect(prow["Storage"]).To(Equal("file:///var/lib/coredog/store"))
	g.Expect(prow["Ready"]).To(Equal(float64(0)))
	g.Expect(prow["Desired"]).To(Equal(float64(0)))
}

type table struct {
	columns  []string
	priority map[string]int64
	rows     []map[string]any
}

func (t table) row(name string) map[string]any {
	for _, r := range t.rows {
		if r["Name"] == name {
			return r
		}
	}
	return nil
}

func getTable(t *testing.T, path string) table {
	t.Helper()
	cfg := rest.CopyConfig(restCfg)
	cfg.GroupVersion = &coredogv1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = clientNegotiator()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	body, err := rc.Get().AbsPath(path).SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("GET %s as Table: %v", path, err)
	}
	var tbl metav1.Table
	if err := json.Unmarshal(body, &tbl); err != nil {
		t.Fatalf("decoding Table: %v", err)
	}
	out := table{priority: map[string]int64{}}
	for _, c := range tbl.ColumnDefinitions {
		out.columns = append(out.columns, c.Name)
		out.priority[c.Name] = int64(c.Priority)
	}
	for _, r := range tbl.Rows {
		if len(r.Cells) != len(out.columns) {
			t.Fatalf("row has %d cells for %d columns", len(r.Cells), len(out.columns))
		}
		m := map[string]any{}
		for i, c := range r.Cells {
			m[out.columns[i]] = c
		}
		out.rows = append(out.rows, m)
	}
	if len(out.rows) == 0 {
		t.Fatalf("no rows at %s", path)
	}
	return out
}
