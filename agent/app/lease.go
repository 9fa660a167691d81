package app

import (
	"context"
	"maps"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coredog/coredog/agent/serve"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
)

// heartbeat keeps the agent's Lease fresh with its endpoint and state, and
// picks up the serving certificate the manager puts there.
func (a *Agent) heartbeat(ctx context.Context) error {
	t := time.NewTicker(a.cfg.LeaseRenew)
	defer t.Stop()
	failing := false
	certWait := certPoll
	for {
		err := a.renewLease(ctx)
		a.metrics.heartbeat(err, time.Now())
		if err != nil {
			failing = true
			a.log.Info("Renewing the agent's Lease failed", "err", err.Error())
		} else if failing {
			failing = false
			// The API server is back: CoreDumps held back meanwhile need
			// not wait out their backoff, nor the CoreDump watch its own.
			a.pending.kick()
			if a.dumps != nil {
				a.dumps.kick()
			}
		}
		// Until the manager has certified its key the agent looks again
		// sooner (1 s, doubling up to the renewal interval), so that it
		// can serve soon after it starts.
		wait := t.C
		if a.identity.Valid(time.Now()) {
			certWait = certPoll
		} else if certWait < a.cfg.LeaseRenew {
			wait = time.After(certWait)
			certWait *= 2
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wait:
		}
	}
}

// certPoll is how often an agent without a serving certificate looks for one.
const certPoll = time.Second

func (a *Agent) renewLease(ctx context.Context) error {
	name := agentlease.Name(a.cfg.Policy, a.cfg.NodeName)
	now := metav1.NewMicroTime(time.Now())
	annotations := map[string]string{
		agentlease.AnnotationServingCSR:  string(a.identity.CSR()),
		agentlease.AnnotationMode:        a.detector.Mode(),
		agentlease.AnnotationCorePattern: a.cfg.CorePattern,
		agentlease.AnnotationLocalBytes:  strconv.FormatInt(a.guard.Usage(), 10),
	}
	lease, err := a.client.getLease(ctx, a.cfg.Namespace, name)
	if apierrors.IsNotFound(err) {
		// A new Lease has no certificate yet, so no endpoint either.
		return a.client.createLease(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: a.cfg.Namespace, Annotations: annotations, Labels: map[string]string{
				coredogv1.LabelNode:   coredogv1.LabelValue(a.cfg.NodeName),
				coredogv1.LabelPolicy: coredogv1.LabelValue(a.cfg.Policy),
			}},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       new(a.cfg.NodeName),
				LeaseDurationSeconds: new(int32(3 * a.cfg.LeaseRenew / time.Second)),
				AcquireTime:          &now,
				RenewTime:            &now,
			},
		})
	}
	if err != nil {
		return err
	}
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	a.takeCertificate(lease.Annotations[agentlease.AnnotationServingCert])
	// The endpoint is published only while the agent can answer on it
	// with its own certificate: the manager dials no agent before that.
	// The certificate annotation is the manager's and stays as it is.
	if a.identity.Valid(time.Now()) {
		annotations[agentlease.AnnotationEndpoint] = a.endpoint
	} else {
		delete(lease.Annotations, agentlease.AnnotationEndpoint)
	}
	maps.Copy(lease.Annotations, annotations)
	lease.Spec.HolderIdentity = new(a.cfg.NodeName)
	lease.Spec.LeaseDurationSeconds = new(int32(3 * a.cfg.LeaseRenew / time.Second))
	lease.Spec.RenewTime = &now
	if err := a.client.updateLease(ctx, lease); err != nil {
		return err
	}
	_, named := annotations[agentlease.AnnotationEndpoint]
	a.published.Store(named)
	return nil
}

// takeCertificate installs the serving certificate the manager put into the
// Lease when it is new and for this agent's key; a certificate for a key of
// an earlier run of the agent waits for the manager to issue a new one.
func (a *Agent) takeCertificate(certPEM string) {
	if certPEM == "" {
		return
	}
	ca, err := serve.ReadCA(a.cfg.TLSDir)
	if err == nil {
		var changed bool
		if changed, err = a.identity.Accept([]byte(certPEM), ca, time.Now()); changed {
			a.certErr = ""
			a.log.Info("Serving with a new certificate from the manager", "node", a.cfg.NodeName)
		}
	}
	if err != nil && err.Error() != a.certErr {
		a.certErr = err.Error()
		a.log.Info("Not using the certificate in the Lease", "err", err.Error())
	}
}
