package integration

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/pki"
)

const (
	timeout  = 30 * time.Second
	interval = 100 * time.Millisecond
)

func newPolicy(name, hostPath string) *coredogv1.CoreDumpPolicy {
	return &coredogv1.CoreDumpPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: coredogv1.CoreDumpPolicySpec{
			HostPath: hostPath,
			Storage:  coredogv1.StorageSpec{URL: "file:///var/lib/coredog/store"},
		},
	}
}

func createPolicy(t *testing.T, p *coredogv1.CoreDumpPolicy) *coredogv1.CoreDumpPolicy {
	t.Helper()
	ctx := context.Background()
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatalf("creating policy %s: %v", p.Name, err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	return p
}

func getDaemonSet(g Gomega, policy string) *appsv1.DaemonSet {
	var ds appsv1.DaemonSet
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: testNamespace, Name: agentset.DaemonSetName(policy)}, &ds)).To(Succeed())
	return &ds
}

func getPolicy(g Gomega, name string) *coredogv1.CoreDumpPolicy {
	var p coredogv1.CoreDumpPolicy
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: name}, &p)).To(Succeed())
	return &p
}

func condition(p *coredogv1.CoreDumpPolicy, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(p.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func TestPolicyRendersAgentDaemonSet(t *testing.T) {
	g := NewWithT(t)
	p := newPolicy("render", "/var/lib/cores-render")
	p.Spec.NodeSelector = map[string]string{"pool": "apps"}
	p.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	p.Spec.PriorityClassName = "system-node-critical"
	p.Spec.Agent.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("96Mi")}}
	createPolicy(t, p)

	g.Eventually(func(g Gomega) {
		ds := getDaemonSet(g, p.Name)
		owner := metav1.GetControllerOf(ds)
		g.Expect(owner).NotTo(BeNil())
		g.Expect(owner.Kind).To(Equal("CoreDumpPolicy"))
		g.Expect(owner.UID).To(Equal(p.UID))
		pod := ds.Spec.Template.Spec
		g.Expect(pod.HostPID).To(BeTrue())
		g.Expect(pod.NodeSelector).To(Equal(map[string]string{"pool": "apps", "kubernetes.io/os": "linux"}))
		g.Expect(pod.Tolerations).To(HaveLen(1))
		g.Expect(pod.PriorityClassName).To(Equal("system-node-critical"))
		g.Expect(pod.ServiceAccountName).To(Equal("coredog-agent"))
		c := pod.Containers[0]
		g.Expect(c.Image).To(Equal(testAgentImage))
		g.Expect(c.Args).To(ContainElements("--policy=render", "--namespace="+testNamespace, "--dir=/var/lib/cores-render"))
		g.Expect(c.Resources.Limits.Memory().String()).To(Equal("96Mi"))
		g.Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
		g.Expect(c.SecurityContext.Privileged).To(BeNil())
		g.Expect(pod.Volumes[0].HostPath.Path).To(Equal("/var/lib/cores-render"))
		g.Expect(pod.Volumes[1].Secret.SecretName).To(Equal(agentset.AgentCASecretName(p.Name)))
		g.Expect(ds.Spec.Template.Annotations).To(HaveKey(coredogv1.AnnotationTLSHash))
	}, timeout, interval).Should(Succeed())

	// The agents' Secret holds the policy's CA certificate alone: no CA key,
	// and no serving key (each agent makes its own).
	var caSecret, agentSecret corev1.Secret
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: testNamespace, Name: agentset.CASecretName(p.Name)}, &caSecret)).To(Succeed())
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: testNamespace, Name: agentset.AgentCASecretName(p.Name)}, &agentSecret)).To(Succeed())
	g.Expect(agentSecret.Data).To(Equal(map[string][]byte{pki.CACertKey: caSecret.Data[pki.CACertKey]}))
	g.Expect(metav1.GetControllerOf(&agentSecret).UID).To(Equal(p.UID))
}

func TestPolicySpecChangeRollsIntoDaemonSet(t *testing.T) {
	g := NewWithT(t)
	p := createPolicy(t, newPolicy("rollout", "/var/lib/cores-rollout"))
	g.Eventually(func(g Gomega) { getDaemonSet(g, p.Name) }, timeout, interval).Should(Succeed())

	g.Eventually(func() error {
		cur := getPolicy(g, p.Name)
		cur.Spec.HostPath = "/var/lib/cores-rollout-2"
		cur.Spec.Agent.Image = "registry.example/agent:v2"
		cur.Spec.CorePattern = coredogv1.CorePatternManage
		return k8s.Update(context.Background(), cur)
	}, timeout, interval).Should(Succeed())

	g.Eventually(func(g Gomega) {
		ds := getDaemonSet(g, p.Name)
		c := ds.Spec.Template.Spec.Containers[0]
		g.Expect(c.Image).To(Equal("registry.example/agent:v2"))
		g.Expect(c.Args).To(ContainElements("--dir=/var/lib/cores-rollout-2", "--core-pattern=Manage"))
		g.Expect(c.SecurityContext.Privileged).NotTo(BeNil())
		g.Expect(*c.SecurityContext.Privileged).To(BeTrue())
		g.Expect(ds.Spec.Template.Spec.Volumes[0].HostPath.Path).To(Equal("/var/lib/cores-rollout-2"))
		g.Expect(ds.Spec.Template.Annotations[coredogv1.AnnotationPolicyGeneration]).To(Equal("2"))
	}, timeout, interval).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(getPolicy(g, p.Name).Status.ObservedGeneration).To(Equal(int64(2)))
	}, timeout, interval).Should(Succeed())
}

func TestPolicyStatusReportsAgentCounts(t *testing.T) {
	g := NewWithT(t)
	p := createPolicy(t, newPolicy("counts", "/var/lib/cores-counts"))
	g.Eventually(func(g Gomega) {
		got := getPolicy(g, p.Name)
		g.Expect(got.Status.DaemonSetName).To(Equal(agentset.DaemonSetName(p.Name)))
		g.Expect(condition(got, coredogv1.ConditionReady).Reason).To(Equal(coredogv1.ReasonNoNodes))
	}, timeout, interval).Should(Succeed())

	// envtest has no kubelet or DaemonSet controller: play their part.
	setDaemonSetStatus := func(desired, ready int32) {
		g.Eventually(func(g Gomega) {
			ds := getDaemonSet(g, p.Name)
			ds.Status = appsv1.DaemonSetStatus{
				DesiredNumberScheduled: desired, CurrentNumberScheduled: desired,
				NumberReady: ready, NumberAvailable: ready, UpdatedNumberScheduled: desired,
				ObservedGeneration: ds.Generation,
			}
			g.Expect(k8s.Status().Update(context.Background(), ds)).To(Succeed())
		}, timeout, interval).Should(Succeed())
	}
	setDaemonSetStatus(3, 2)
	g.Eventually(func(g Gomega) {
		got := getPolicy(g, p.Name)
		g.Expect(got.Status.DesiredAgents).To(Equal(int32(3)))
		g.Expect(got.Status.ReadyAgents).To(Equal(int32(2)))
		c := condition(got, coredogv1.ConditionReady)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(coredogv1.ReasonAgentsNotReady))
		g.Expect(c.Message).To(Equal("2 of 3 agents are ready"))
	}, timeout, interval).Should(Succeed())
	setDaemonSetStatus(3, 3)
	g.Eventually(func(g Gomega) {
		got := getPolicy(g, p.Name)
		g.Expect(got.Status.ReadyAgents).To(Equal(int32(3)))
		g.Expect(condition(got, coredogv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
	}, timeout, interval).Should(Succeed())
}

func TestPolicyConflict(t *testing.T) {
	g := NewWithT(t)
	older := createPolicy(t, newPolicy("conflict-old", "/var/lib/cores-shared"))
	g.Eventually(func(g Gomega) { getDaemonSet(g, older.Name) }, timeout, interval).Should(Succeed())
	// Creation timestamps have one-second resolution; make the order certain.
	time.Sleep(1100 * time.Millisecond)
	newer := createPolicy(t, newPolicy("conflict-new", "/var/lib/cores-shared/nested"))

	g.Eventually(func(g Gomega) {
		got := getPolicy(g, newer.Name)
		c := condition(got, coredogv1.ConditionConflict)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(c.Message).To(ContainSubstring("conflict-old"))
		g.Expect(condition(got, coredogv1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))
		g.Expect(condition(getPolicy(g, older.Name), coredogv1.ConditionConflict).Status).To(Equal(metav1.ConditionFalse))
	}, timeout, interval).Should(Succeed())
	g.Consistently(func() bool {
		var ds appsv1.DaemonSet
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: testNamespace, Name: agentset.DaemonSetName(newer.Name)}, &ds)
		return apierrors.IsNotFound(err)
	}, 2*time.Second, interval).Should(BeTrue(), "the newer policy must run no agents")

	// The older one goes away: the newer one takes over.
	g.Expect(k8s.Delete(context.Background(), older)).To(Succeed())
	g.Eventually(func(g Gomega) {
		got := getPolicy(g, newer.Name)
		g.Expect(condition(got, coredogv1.ConditionConflict).Status).To(Equal(metav1.ConditionFalse))
		getDaemonSet(g, newer.Name)
	}, timeout, interval).Should(Succeed())
}

func TestPolicyStorageValidation(t *testing.T) {
	g := NewWithT(t)
	p := newPolicy("storage", "/var/lib/cores-storage")
	p.Spec.Storage.URL = "s3://cores/prod?region=eu-west-1"
	p.Spec.Storage.SecretRef = &coredogv1.SecretReference{Name: "s3-creds"}
	createPolicy(t, p)
	g.Eventually(func(g Gomega) {
		got := getPolicy(g, p.Name)
		c := condition(got, coredogv1.ConditionStorageValid)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(coredogv1.ReasonSecretNotFound))
		g.Expect(c.Message).To(ContainSubstring("s3-creds"))
		g.Expect(condition(got, coredogv1.ConditionReady).Reason).To(Equal(coredogv1.ReasonStorageInvalid))
		// Agents still run: dumps wait on the nodes until storage is fixed.
		getDaemonSet(g, p.Name)
	}, timeout, interval).Should(Succeed())

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-creds", Namespace: testNamespace},
		StringData: map[string]string{"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}}
	g.Expect(k8s.Create(context.Background(), secret)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), secret) })
	g.Eventually(func(g Gomega) {
		g.Expect(condition(getPolicy(g, p.Name), coredogv1.ConditionStorageValid).Status).To(Equal(metav1.ConditionTrue))
	}, timeout, interval).Should(Succeed())

	// A Secret that lacks a key: the condition names it.
	g.Eventually(func() error {
		var cur corev1.Secret
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(secret), &cur); err != nil {
			return err
		}
		delete(cur.Data, "AWS_SECRET_ACCESS_KEY")
		return k8s.Update(context.Background(), &cur)
	}, timeout, interval).Should(Succeed())
	g.Eventually(func(g Gomega) {
		c := condition(getPolicy(g, p.Name), coredogv1.ConditionStorageValid)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Message).To(ContainSubstring("AWS_SECRET_ACCESS_KEY"))
	}, timeout, interval).Should(Succeed())

	for _, tc := range []struct{ url, tmpl, reason, msg string }{
		{"s3://cores?regoin=eu", "", coredogv1.ReasonInvalidStorageURL, `unknown option "regoin"`},
		{"s3://cores", "{{.Bucket}}", coredogv1.ReasonInvalidKeyTemplate, "Bucket"},
		{"s3://cores", "/{{.Pod}}", coredogv1.ReasonInvalidKeyTemplate, "starts with /"},
	} {
		g.Eventually(func() error {
			cur := getPolicy(g, p.Name)
			cur.Spec.Storage.URL, cur.Spec.Storage.KeyTemplate = tc.url, tc.tmpl
			if tc.tmpl == "" {
				cur.Spec.Storage.KeyTemplate = coredogv1.DefaultKeyTemplate
			}
			return k8s.Update(context.Background(), cur)
		}, timeout, interval).Should(Succeed())
		g.Eventually(func(g Gomega) {
			c := condition(getPolicy(g, p.Name), coredogv1.ConditionStorageValid)
			g.Expect(c.Reason).To(Equal(tc.reason))
			g.Expect(c.Message).To(ContainSubstring(tc.msg))
		}, timeout, interval).Should(Succeed())
	}
}

func TestPolicyDefaults(t *testing.T) {
	g := NewWithT(t)
	p := createPolicy(t, &coredogv1.CoreDumpPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "defaults"},
		Spec: coredogv1.CoreDumpPolicySpec{
			NodeSelector: map[string]string{"defaults-test": "true"},
			Storage:      coredogv1.StorageSpec{URL: "gs://bucket"},
		},
	})
	got := getPolicy(g, p.Name)
	s := got.Spec
	g.Expect(s.HostPath).To(Equal(coredogv1.DefaultHostPath))
	g.Expect(s.FileNamePattern).To(Equal(coredogv1.DefaultFileNamePattern))
	g.Expect(s.CorePattern).To(Equal(coredogv1.CorePatternObserve))
	g.Expect(s.Detection.PollInterval.Duration).To(Equal(10 * time.Second))
	g.Expect(s.Detection.SettleTime.Duration).To(Equal(2 * time.Second))
	g.Expect(s.Storage.KeyTemplate).To(Equal(coredogv1.DefaultKeyTemplate))
	g.Expect(s.Storage.Compression).To(Equal(coredogv1.CompressionZstd))
	g.Expect(s.Limits.MaxNodeUsage.String()).To(Equal("10Gi"))
	g.Expect(s.Limits.MinNodeFree).To(Equal("5%"))
	g.Expect(*s.Limits.RateLimit.Count).To(Equal(int32(5)))
	g.Expect(s.Limits.RateLimit.Window.Duration).To(Equal(time.Hour))
	g.Expect(s.Retention.TTL.Duration).To(Equal(720 * time.Hour))
}
