package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/pki"
)

// ensureTLS makes sure a policy has its private CA, and that its agents can
// read the CA certificate (never the key), issuing or rotating the CA when
// it is missing, broken or old. Agents' serving certificates are issued per
// node from their Leases (AgentCertReconciler). The Secret that held one
// serving key for all agents of the policy, from before, is deleted. It
// returns a fingerprint of the CA certificate, which goes into the pod
// template so that agents restart when it changes.
func (r *CoreDumpPolicyReconciler) ensureTLS(ctx context.Context, p *coredogv1.CoreDumpPolicy) (string, error) {
	ca, _, err := r.ensureCA(ctx, p, r.now())
	if err != nil {
		return "", err
	}
	name := agentset.AgentCASecretName(p.Name)
	data := map[string][]byte{pki.CACertKey: ca.CertPEM}
	if err := r.applySecret(ctx, p, name, corev1.SecretTypeOpaque, data); err != nil {
		return "", err
	}
	if err := r.deleteLegacyAgentTLS(ctx, p); err != nil {
		return "", err
	}
	return pki.Fingerprint(ca.CertPEM), nil
}

// deleteLegacyAgentTLS removes the policy-wide serving key agents used to
// mount: whoever read it could answer as any of the policy's agents.
func (r *CoreDumpPolicyReconciler) deleteLegacyAgentTLS(ctx context.Context, p *coredogv1.CoreDumpPolicy) error {
	var old corev1.Secret
	name := agentset.LegacyAgentTLSSecretName(p.Name)
	// The cache alone: a Secret it does not know of is gone.
	if err := r.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: name}, &old); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading Secret %s: %w", name, err)
	}
	if err := r.Delete(ctx, &old); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting Secret %s, the agents' former shared serving key: %w", name, err)
	}
	ctrlLog(ctx).Info("Deleted the agents' former shared serving key", "secret", name)
	return nil
}

func (r *CoreDumpPolicyReconciler) ensureCA(ctx context.Context, p *coredogv1.CoreDumpPolicy, now time.Time) (*pki.CA, bool, error) {
	name := agentset.CASecretName(p.Name)
	var current corev1.Secret
	err := r.getSecret(ctx, name, &current)
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, false, fmt.Errorf("reading Secret %s: %w", name, err)
	}
	if err == nil {
		ca, perr := pki.ParseCA(current.Data[pki.CACertKey], current.Data[pki.CAKeyKey])
		if perr == nil {
			if renew, _ := pki.NeedsRenewal(ca.CertPEM, nil, nil, now); !renew {
				return ca, false, r.applySecret(ctx, p, name, corev1.SecretTypeOpaque, current.Data)
			}
		}
		ctrlLog(ctx).Info("Replacing the policy's CA", "secret", name, "parseError", fmt.Sprint(perr))
	}
	ca, err := pki.NewCA("coredog "+p.Name+" CA", now)
	if err != nil {
		return nil, false, err
	}
	data := map[string][]byte{pki.CACertKey: ca.CertPEM, pki.CAKeyKey: ca.KeyPEM}
	if err := r.applySecret(ctx, p, name, corev1.SecretTypeOpaque, data); err != nil {
		return nil, false, err
	}
	return ca, true, nil
}

// getSecret reads a Secret from the cache and, when the cache does not have
// it, from the API server. The cache lags behind this reconciler's own
// writes: taking a CA it applied a moment ago for a missing one would
// replace it, and the agents would serve certificates from a CA that the
// manager no longer trusts.
func (r *CoreDumpPolicyReconciler) getSecret(ctx context.Context, name string, s *corev1.Secret) error {
	key := client.ObjectKey{Namespace: r.Namespace, Name: name}
	err := r.Get(ctx, key, s)
	if apierrors.IsNotFound(err) && r.APIReader != nil {
		err = r.APIReader.Get(ctx, key, s)
	}
	return err
}

func (r *CoreDumpPolicyReconciler) applySecret(ctx context.Context, p *coredogv1.CoreDumpPolicy, name string, typ corev1.SecretType, data map[string][]byte) error {
	s := &corev1.Secret{
		Type: typ,
		Data: data,
	}
	s.Name, s.Namespace = name, r.Namespace
	s.Labels = agentset.Labels(p.Name)
	s.Labels[coredogv1.LabelComponent] = "tls"
	s.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return r.apply(ctx, p, s)
}
