package app

import (
	"context"
	"maps"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
)

// heartbeat keeps the agent's Lease fresh with its endpoint and state.
func (a *Agent) heartbeat(ctx context.Context) error {
	t := time.NewTicker(a.cfg.LeaseRenew)
	defer t.Stop()
	failing := false
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
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (a *Agent) renewLease(ctx context.Context) error {
	name := agentlease.Name(a.cfg.Policy, a.cfg.NodeName)
	now := metav1.NewMicroTime(time.Now())
	annotations := map[string]string{
		agentlease.AnnotationEndpoint:    a.endpoint,
		agentlease.AnnotationMode:        a.detector.Mode(),
		agentlease.AnnotationCorePattern: a.cfg.CorePattern,
		agentlease.AnnotationLocalBytes:  strconv.FormatInt(a.guard.Usage(), 10),
	}
	lease, err := a.client.getLease(ctx, a.cfg.Namespace, name)
	if apierrors.IsNotFound(err) {
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
	maps.Copy(lease.Annotations, annotations)
	lease.Spec.HolderIdentity = new(a.cfg.NodeName)
	lease.Spec.LeaseDurationSeconds = new(int32(3 * a.cfg.LeaseRenew / time.Second))
	lease.Spec.RenewTime = &now
	return a.client.updateLease(ctx, lease)
}
