package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
)

// maxMessage bounds message cells in status tables.
const maxMessage = 80

func statusCommand() command {
	return command{
		name:    "status",
		args:    "[flags]",
		summary: "Show policies, agents per node, and dumps waiting or failed.",
		help: `Show CoreDog's state: each CoreDumpPolicy (Ready, agents desired and ready,
storage, dump counters), each agent from its Lease (node, endpoint, time since
its last heartbeat, watch or poll mode, core_pattern mode, bytes of cores kept
on the node), and the dumps that are waiting to be uploaded or have failed.

Examples:
  kubectl coredog status
  kubectl coredog status -n coredog-system
  kubectl coredog status -A`,
		setup: func(fs *pflag.FlagSet) func(context.Context, *app, []string) error {
			return func(ctx context.Context, a *app, args []string) error {
				if len(args) > 0 {
					return fmt.Errorf("%w: status takes no arguments", errUsage)
				}
				return a.status(ctx)
			}
		},
	}
}

// StatusReport is what status shows. A part that could not be read has its
// error instead, so that people with partial rights still see the rest.
type StatusReport struct {
	Policies      []coredogv1.CoreDumpPolicy
	PoliciesError string
	Leases        []coordinationv1.Lease
	LeasesError   string
	// Dumps are the dumps waiting (Pending, Uploading) or Failed.
	Dumps      []coredogv1.CoreDump
	DumpsError string
	// WithNamespace qualifies dump names (status -A).
	WithNamespace bool
}

func (a *app) status(ctx context.Context) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	r := StatusReport{WithNamespace: a.allNamespaces}
	var ns []client.ListOption
	if n := a.listNamespace(); n != "" {
		ns = append(ns, client.InNamespace(n))
	}
	var policies coredogv1.CoreDumpPolicyList
	if err := c.List(ctx, &policies); err != nil {
		if meta.IsNoMatchError(err) {
			return apiError(err, "listing CoreDumpPolicies")
		}
		r.PoliciesError = apiError(err, "listing CoreDumpPolicies").Error()
	}
	r.Policies = policies.Items
	var leases coordinationv1.LeaseList
	if err := c.List(ctx, &leases, append(ns, client.HasLabels{coredogv1.LabelPolicy})...); err != nil {
		r.LeasesError = apiError(err, "listing agent Leases").Error()
	}
	r.Leases = leases.Items
	var dumps coredogv1.CoreDumpList
	if err := c.List(ctx, &dumps, ns...); err != nil {
		r.DumpsError = apiError(err, "listing CoreDumps").Error()
	}
	for _, cd := range dumps.Items {
		switch cd.Status.Phase {
		case "", coredogv1.PhasePending, coredogv1.PhaseUploading, coredogv1.PhaseFailed:
			r.Dumps = append(r.Dumps, cd)
		}
	}
	sortDumps(r.Dumps)
	RenderStatus(a.stdout, r, a.now())
	return nil
}

// RenderStatus prints a status report.
func RenderStatus(w io.Writer, r StatusReport, now time.Time) {
	fmt.Fprintln(w, "Policies:")
	switch {
	case r.PoliciesError != "":
		fmt.Fprintf(w, "  <%s>\n", safe(r.PoliciesError))
	case len(r.Policies) == 0:
		fmt.Fprintln(w, "  <none>: apply a CoreDumpPolicy to start capturing dumps")
	default:
		tw := newTable(w)
		header(tw, "  NAME", "READY", "AGENTS", "STORAGE", "CAPTURED", "UPLOADED", "SKIPPED", "FAILED", "COUNTED", "MESSAGE")
		for _, p := range r.Policies {
			ready, msg := policyReadiness(&p)
			d := p.Status.Dumps
			row(tw, "  "+p.Name, ready, fmt.Sprintf("%d/%d", p.Status.ReadyAgents, p.Status.DesiredAgents), p.Spec.Storage.URL,
				strconv.FormatInt(d.Captured, 10), strconv.FormatInt(d.Uploaded, 10), strconv.FormatInt(d.Skipped, 10), strconv.FormatInt(d.Failed, 10),
				strconv.FormatInt(d.Counted, 10), cmp.Or(truncate(msg, maxMessage), "-"))
		}
		tw.Flush()
	}

	fmt.Fprintln(w, "\nAgents:")
	switch {
	case r.LeasesError != "":
		fmt.Fprintf(w, "  <%s>\n", safe(r.LeasesError))
	case len(r.Leases) == 0:
		fmt.Fprintln(w, "  <none>: no agent has published a Lease (see the policies' agent counts)")
	default:
		leases := append([]coordinationv1.Lease(nil), r.Leases...)
		names := policyNamesByLabel(r.Policies)
		sort.SliceStable(leases, func(i, j int) bool {
			pi, pj := leasePolicy(&leases[i], names), leasePolicy(&leases[j], names)
			if pi != pj {
				return pi < pj
			}
			return leaseNode(&leases[i]) < leaseNode(&leases[j])
		})
		tw := newTable(w)
		header(tw, "  POLICY", "NODE", "ENDPOINT", "HEARTBEAT", "MODE", "CORE_PATTERN", "LOCAL")
		for i := range leases {
			l := &leases[i]
			row(tw, "  "+leasePolicy(l, names), leaseNode(l), l.Annotations[agentlease.AnnotationEndpoint], heartbeat(l, now),
				l.Annotations[agentlease.AnnotationMode], l.Annotations[agentlease.AnnotationCorePattern], localBytes(l))
		}
		tw.Flush()
	}

	fmt.Fprintln(w, "\nDumps waiting or failed:")
	switch {
	case r.DumpsError != "":
		fmt.Fprintf(w, "  <%s>\n", safe(r.DumpsError))
	case len(r.Dumps) == 0:
		fmt.Fprintln(w, "  <none>")
	default:
		tw := newTable(w)
		header(tw, "  NAME", "POD", "NODE", "PHASE", "AGE", "ATTEMPTS", "MESSAGE")
		for i := range r.Dumps {
			cd := &r.Dumps[i]
			p := podRef(cd)
			pod := ""
			if p.Name != "" {
				pod = p.Namespace + "/" + p.Name
			}
			row(tw, "  "+qualifiedName(cd, r.WithNamespace), pod, cd.Spec.NodeName, phase(cd), age(now, cd.CrashTime()),
				strconv.Itoa(int(cd.Status.Attempts)), cmp.Or(truncate(cd.Status.Message, maxMessage), "-"))
		}
		tw.Flush()
	}
}

// policyReadiness is the Ready condition's status, and what is wrong when
// the policy is not ready or in conflict.
func policyReadiness(p *coredogv1.CoreDumpPolicy) (string, string) {
	ready := meta.FindStatusCondition(p.Status.Conditions, coredogv1.ConditionReady)
	if c := meta.FindStatusCondition(p.Status.Conditions, coredogv1.ConditionConflict); c != nil && c.Status == metav1.ConditionTrue {
		return conditionStatus(ready), "Conflict: " + c.Message
	}
	if ready == nil {
		return "Unknown", "not reconciled yet"
	}
	if ready.Status != metav1.ConditionTrue {
		return string(ready.Status), strings.TrimSpace(ready.Reason + ": " + ready.Message)
	}
	return string(ready.Status), ""
}

func conditionStatus(c *metav1.Condition) string {
	if c == nil {
		return "Unknown"
	}
	return string(c.Status)
}

// policyNamesByLabel maps the coredog.io/policy label value of each policy
// to its name (long names are hashed in labels).
func policyNamesByLabel(policies []coredogv1.CoreDumpPolicy) map[string]string {
	m := map[string]string{}
	for _, p := range policies {
		m[coredogv1.LabelValue(p.Name)] = p.Name
	}
	return m
}

func leasePolicy(l *coordinationv1.Lease, names map[string]string) string {
	v := l.Labels[coredogv1.LabelPolicy]
	if n, ok := names[v]; ok {
		return n
	}
	return v
}

// leaseNode is the agent's node: the Lease's holder, which agents set to
// their node's full name.
func leaseNode(l *coordinationv1.Lease) string {
	if h := l.Spec.HolderIdentity; h != nil && *h != "" {
		return *h
	}
	return l.Labels[coredogv1.LabelNode]
}

// heartbeat is the time since the agent last renewed its Lease, marked
// stale once the Lease has expired.
func heartbeat(l *coordinationv1.Lease, now time.Time) string {
	t := l.Spec.RenewTime
	if t == nil || t.IsZero() {
		return "never"
	}
	s := age(now, t.Time) + " ago"
	if d := l.Spec.LeaseDurationSeconds; d != nil && now.Sub(t.Time) > time.Duration(*d)*time.Second {
		s += " (stale)"
	}
	return s
}

func localBytes(l *coordinationv1.Lease) string {
	v := l.Annotations[agentlease.AnnotationLocalBytes]
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return v
	}
	return coredogv1.DisplaySize(n)
}
