package storage

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
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
	client, err := azureClient(loc, so, creds)
	if err != nil {
		return nil, err
	}
	bucket, err := azureblob.OpenBucket(ctx, client, nil)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", loc.BucketURL(), err)
	}
	return &bucketStore{bucket: bucket, tune: func(wo *blob.WriterOptions) {
		wo.MaxConcurrency = azureConcurrency
	}}, nil
}

func azureClient(loc *Location, so *azureblob.ServiceURLOptions, creds map[string][]byte) (*container.Client, error) {
	if cs := value(creds, KeyAzureConnString); cs != "" {
		// The connection string names the endpoint itself; the URL's
		// storage_account, domain and protocol do not apply.
		c, err := container.NewClientFromConnectionString(cs, loc.Bucket, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCredentials, KeyAzureConnString, err)
		}
		return c, nil
	}
	if creds != nil {
		account := value(creds, KeyAzureAccount)
		switch {
		case account != "" && so.AccountName != "" && account != so.AccountName:
			return nil, fmt.Errorf("%w: the Secret's %s (%s) and the URL's storage_account (%s) differ",
				ErrCredentials, KeyAzureAccount, account, so.AccountName)
		case account == "" && so.AccountName == "":
			return nil, fmt.Errorf("%w: Secret lacks %s, and the URL has no storage_account", ErrCredentials, KeyAzureAccount)
		case account != "":
			so.AccountName = account
		}
		cred, err := container.NewSharedKeyCredential(so.AccountName, value(creds, KeyAzureKey))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCredentials, KeyAzureKey, err)
		}
		u, err := azureContainerURL(so, loc.Bucket)
		if err != nil {
			return nil, err
		}
		return container.NewClientWithSharedKeyCredential(u, cred, nil)
	}
	if so.AccountName == "" {
		return nil, fmt.Errorf("%w: azblob:// without a Secret needs the storage account in the URL (azblob://%s?storage_account=NAME)",
			ErrInvalidURL, loc.Bucket)
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("setting up Azure default credentials (Workload Identity, managed identity): %w", err)
	}
	u, err := azureContainerURL(so, loc.Bucket)
	if err != nil {
		return nil, err
	}
	return container.NewClient(u, cred, nil)
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
