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

// ensureTLS makes sure a policy has its private CA and its agents have a
// serving certificate from it, issuing or rotating what is missing, broken
// or old. It returns a fingerprint of the agents' material, which goes into
// the pod template so that agents restart when it changes.
func (r *CoreDumpPolicyReconciler) ensureTLS(ctx context.Context, p *coredogv1.CoreDumpPolicy) (string, error) {
	now := r.now()
	ca, caChanged, err := r.ensureCA(ctx, p, now)
	if err != nil {
		return "", err
	}
	name := agentset.AgentTLSSecretName(p.Name)
	var current corev1.Secret
	err = r.getSecret(ctx, name, &current)
	if err != nil && !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("reading Secret %s: %w", name, err)
	}
	dnsNames := []string{pki.AgentServerName(p.Name)}
	renew, why := true, "it does not exist"
	if err == nil {
		renew, why = pki.NeedsRenewal(current.Data[pki.TLSCertKey], ca.Cert, dnsNames, now)
		if !renew && (caChanged || string(current.Data[pki.CACertKey]) != string(ca.CertPEM)) {
			renew, why = true, "the CA changed"
		}
	}
	data := current.Data
	if renew {
		if data, err = ca.AgentServingData(p.Name, now); err != nil {
			return "", fmt.Errorf("issuing agent certificate for policy %s: %w", p.Name, err)
		}
		ctrlLog(ctx).Info("Issuing agent serving certificate", "secret", name, "why", why)
	}
	// Applied every time (not only on renewal) so that labels and the owner
	// reference stay as rendered; server-side apply makes it a no-op when equal.
	if err := r.applySecret(ctx, p, name, corev1.SecretTypeTLS, data); err != nil {
		return "", err
	}
	return pki.Fingerprint(data[pki.CACertKey], data[pki.TLSCertKey]), nil
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
