package storage

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"
	"gocloud.dev/blob"
	"gocloud.dev/blob/azureblob"
)

// azureServiceOptions reads the azblob:// URL options. gocloud's own
// defaults come from process environment variables, which one controller
// serving many policies must not use, so they are built here from the URL
// alone.
func azureServiceOptions(q url.Values) (*azureblob.ServiceURLOptions, error) {
	o := &azureblob.ServiceURLOptions{
		AccountName:   q.Get("storage_account"),
		StorageDomain: q.Get("domain"),
		Protocol:      q.Get("protocol"),
	}
	for name, dst := range map[string]*bool{"cdn": &o.IsCDN, "localemu": &o.IsLocalEmulator} {
		if v := q.Get(name); v != "" {
			x, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %s=%q is not true or false", ErrInvalidURL, name, v)
			}
			*dst = x
		}
	}
	return o, nil
}

func openAzure(ctx context.Context, loc *Location, creds map[string][]byte) (*bucketStore, error) {
	so, err := azureServiceOptions(loc.Query)
	if err != nil {
		return nil, err
	}
	client, tokenCred, err := azureClient(loc, so, creds)
	if err != nil {
		return nil, err
	}
	bucket, err := azureblob.OpenBucket(ctx, client, nil)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", loc.BucketURL(), err)
	}
	sign := func(ctx context.Context, fullKey string, expiry time.Duration) (string, error) {
		u, err := bucket.SignedURL(ctx, fullKey, &blob.SignedURLOptions{Expiry: expiry, Method: http.MethodGet})
		if errors.Is(err, bloberror.MissingSharedKeyCredential) {
			return "", fmt.Errorf("%w: a connection string with a SAS token cannot sign; use an account key", ErrSignedURLUnsupported)
		}
		return u, err
	}
	if tokenCred != nil {
		sign = func(ctx context.Context, fullKey string, expiry time.Duration) (string, error) {
			return azureUserDelegationURL(ctx, client, tokenCred, fullKey, expiry)
		}
	}
	return &bucketStore{bucket: bucket, sign: sign, tune: func(wo *blob.WriterOptions) {
		wo.MaxConcurrency = azureConcurrency
	}}, nil
}

// azureUserDelegationURL signs a read-only SAS with a user delegation key,
// which is how an identity without the account key (Workload Identity,
// managed identity) signs; it needs the Storage Blob Delegator role, which
// Storage Blob Data Contributor includes. A delegation key lives at most
// seven days, as the link may.
func azureUserDelegationURL(ctx context.Context, c *container.Client, cred azcore.TokenCredential, fullKey string, expiry time.Duration) (string, error) {
	parts, err := sas.ParseURL(c.URL())
	if err != nil {
		return "", err
	}
	svcURL := parts.Scheme + "://" + parts.Host + "/"
	if a := parts.IPEndpointStyleInfo.AccountName; a != "" {
		svcURL += a + "/"
	}
	svc, err := service.NewClient(svcURL, cred, nil)
	if err != nil {
		return "", err
	}
	// Starting a minute early forgives clocks a little apart.
	start := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	end := time.Now().UTC().Add(expiry).Truncate(time.Second)
	udc, err := svc.GetUserDelegationCredential(ctx, service.KeyInfo{
		Start: ptr(start.Format(sas.TimeFormat)), Expiry: ptr(end.Format(sas.TimeFormat)),
	}, nil)
	if err != nil {
		return "", fmt.Errorf("getting a user delegation key: %w", err)
	}
	protocol := sas.ProtocolHTTPS
	if strings.EqualFold(parts.Scheme, "http") {
		protocol = sas.ProtocolHTTPSandHTTP
	}
	qp, err := sas.BlobSignatureValues{
		Protocol: protocol, StartTime: start, ExpiryTime: end,
		Permissions:   (&sas.BlobPermissions{Read: true}).String(),
		ContainerName: parts.ContainerName, BlobName: fullKey,
	}.SignWithUserDelegation(udc)
	if err != nil {
		return "", err
	}
	return c.NewBlobClient(fullKey).URL() + "?" + qp.Encode(), nil
}

func ptr[T any](v T) *T { return &v }

// azureClient makes the container client; the token credential is returned
// too when there is no shared key, because signing then needs it.
func azureClient(loc *Location, so *azureblob.ServiceURLOptions, creds map[string][]byte) (*container.Client, azcore.TokenCredential, error) {
	if cs := value(creds, KeyAzureConnString); cs != "" {
		// The connection string names the endpoint itself; the URL's
		// storage_account, domain and protocol do not apply.
		c, err := container.NewClientFromConnectionString(cs, loc.Bucket, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrCredentials, KeyAzureConnString, err)
		}
		return c, nil, nil
	}
	if creds != nil {
		account := value(creds, KeyAzureAccount)
		switch {
		case account != "" && so.AccountName != "" && account != so.AccountName:
			return nil, nil, fmt.Errorf("%w: the Secret's %s (%s) and the URL's storage_account (%s) differ",
				ErrCredentials, KeyAzureAccount, account, so.AccountName)
		case account == "" && so.AccountName == "":
			return nil, nil, fmt.Errorf("%w: Secret lacks %s, and the URL has no storage_account", ErrCredentials, KeyAzureAccount)
		case account != "":
			so.AccountName = account
		}
		cred, err := container.NewSharedKeyCredential(so.AccountName, value(creds, KeyAzureKey))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrCredentials, KeyAzureKey, err)
		}
		u, err := azureContainerURL(so, loc.Bucket)
		if err != nil {
			return nil, nil, err
		}
		c, err := container.NewClientWithSharedKeyCredential(u, cred, nil)
		return c, nil, err
	}
	if so.AccountName == "" {
		return nil, nil, fmt.Errorf("%w: azblob:// without a Secret needs the storage account in the URL (azblob://%s?storage_account=NAME)",
			ErrInvalidURL, loc.Bucket)
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("setting up Azure default credentials (Workload Identity, managed identity): %w", err)
	}
	u, err := azureContainerURL(so, loc.Bucket)
	if err != nil {
		return nil, nil, err
	}
	c, err := container.NewClient(u, cred, nil)
	return c, cred, err
}

func azureContainerURL(so *azureblob.ServiceURLOptions, containerName string) (string, error) {
	svc, err := azureblob.NewServiceURL(so)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	u, err := url.JoinPath(string(svc), containerName)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	return u, nil
}
