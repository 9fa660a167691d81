package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"
)

// azureServiceURLOptions are the azblob:// URL options that make the
// service URL, as gocloud's azureblob read them.
type azureServiceURLOptions struct {
	AccountName, StorageDomain, Protocol string
	IsCDN, IsLocalEmulator               bool
}

// azureServiceOptions reads the azblob:// URL options. Defaults are never
// taken from process environment variables, which one controller serving
// many policies must not use: they come from the URL alone.
func azureServiceOptions(q url.Values) (*azureServiceURLOptions, error) {
	o := &azureServiceURLOptions{
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

// azureServiceURL is the Blob service's URL: https://ACCOUNT.DOMAIN, or
// PROTOCOL://DOMAIN/ACCOUNT for an emulator (or a domain on loopback), or
// PROTOCOL://DOMAIN for a CDN.
func azureServiceURL(o *azureServiceURLOptions) (string, error) {
	if o.AccountName == "" {
		return "", errors.New("no storage account")
	}
	domain := o.StorageDomain
	if domain == "" {
		domain = "blob.core.windows.net"
	}
	protocol := o.Protocol
	switch protocol {
	case "":
		protocol = "https"
	case "http", "https":
	default:
		return "", fmt.Errorf("invalid protocol %q: not http or https", protocol)
	}
	switch {
	case strings.HasPrefix(domain, "127.0.0.1") || strings.HasPrefix(domain, "localhost") || o.IsLocalEmulator:
		return protocol + "://" + domain + "/" + o.AccountName, nil
	case o.IsCDN:
		return protocol + "://" + domain, nil
	}
	return protocol + "://" + o.AccountName + "." + domain, nil
}

func openAzure(loc *Location, creds map[string][]byte) (*azureStore, error) {
	so, err := azureServiceOptions(loc.Query)
	if err != nil {
		return nil, err
	}
	client, tokenCred, err := azureClient(loc, so, creds)
	if err != nil {
		return nil, err
	}
	return &azureStore{loc: loc, client: client, tokenCred: tokenCred}, nil
}

// azureStore is a Store on an Azure Blob Storage container, through the
// SDK's container and block blob clients. Keys are escaped as gocloud's
// azureblob escaped them (azureBlobName), so that blobs written by earlier
// versions keep their names.
type azureStore struct {
	loc    *Location
	client *container.Client
	// tokenCred signs user delegation SAS when there is no shared key.
	tokenCred azcore.TokenCredential
}

var _ Store = (*azureStore)(nil)

func (s *azureStore) blobName(key string) string { return azureBlobName(s.loc.Prefix + key) }

func (s *azureStore) Write(ctx context.Context, key string, r io.Reader, opts WriteOptions) (int64, error) {
	if err := checkWrite(s.loc, key, &opts); err != nil {
		return 0, err
	}
	bb := s.client.NewBlockBlobClient(s.blobName(key))
	n, err := azureUpload(ctx, bb, CtxReader{Ctx: ctx, R: r}, partSizeFor(opts.SizeHint), &opts)
	if bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		err = fmt.Errorf("%w: %w", ErrExists, err)
	}
	if err != nil {
		return n, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), s.refusal(err))
	}
	return n, nil
}

func (s *azureStore) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	_, err := s.client.NewBlobClient(s.blobName(key)).Delete(ctx, nil)
	if err != nil && !azureMissing(err) {
		return fmt.Errorf("deleting %s: %w", s.loc.ObjectURL(key), s.refusal(err))
	}
	return nil
}

func (s *azureStore) Size(ctx context.Context, key string) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	p, err := s.client.NewBlobClient(s.blobName(key)).GetProperties(ctx, nil)
	if err != nil {
		return 0, s.readError(key, err)
	}
	if p.ContentLength == nil {
		return 0, s.readError(key, errors.New("the Azure service sent no Content-Length"))
	}
	return *p.ContentLength, nil
}

func (s *azureStore) Stat(ctx context.Context, key string) (*ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	p, err := s.client.NewBlobClient(s.blobName(key)).GetProperties(ctx, nil)
	if err != nil {
		return nil, s.readError(key, err)
	}
	if p.ContentLength == nil {
		return nil, s.readError(key, errors.New("the Azure service sent no Content-Length"))
	}
	md := make(map[string]string, len(p.Metadata))
	for k, v := range p.Metadata {
		if v != nil {
			md[hexUnescape(k)] = *v
		}
	}
	return &ObjectInfo{Size: *p.ContentLength, Metadata: lowerKeys(md, url.PathUnescape)}, nil
}

func (s *azureStore) Read(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	resp, err := s.client.NewBlobClient(s.blobName(key)).DownloadStream(ctx, nil)
	if err != nil {
		return nil, s.readError(key, err)
	}
	var ct string
	if resp.ContentType != nil {
		ct = *resp.ContentType
	}
	return &objectReader{ReadCloser: resp.Body, contentType: ct}, nil
}

// SignedURL makes a read-only SAS: with the shared key when there is one
// (without contacting Azure), otherwise with a user delegation key.
func (s *azureStore) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if err := checkSign(s.loc, key, expiry); err != nil {
		return "", err
	}
	name := s.blobName(key)
	var (
		u   string
		err error
	)
	if s.tokenCred != nil {
		u, err = azureUserDelegationURL(ctx, s.client, s.tokenCred, name, expiry)
	} else {
		start := time.Now().UTC()
		u, err = s.client.NewBlobClient(name).GetSASURL(sas.BlobPermissions{Read: true}, start.Add(expiry), &blob.GetSASURLOptions{StartTime: &start})
		if errors.Is(err, bloberror.MissingSharedKeyCredential) {
			err = fmt.Errorf("%w: a connection string with a SAS token cannot sign; use an account key", ErrSignedURLUnsupported)
		}
	}
	if err != nil {
		return "", fmt.Errorf("signing %s: %w", s.loc.ObjectURL(key), s.refusal(err))
	}
	return u, nil
}

// Close releases nothing: the clients hold no connections of their own.
func (s *azureStore) Close() error { return nil }

func (s *azureStore) readError(key string, err error) error {
	if azureMissing(err) {
		return notFound(s.loc, key)
	}
	return fmt.Errorf("reading %s: %w", s.loc.ObjectURL(key), s.refusal(err))
}

// refusal wraps 401 and 403 answers in ErrCredentials.
func (s *azureStore) refusal(err error) error {
	if re, ok := errors.AsType[*azcore.ResponseError](err); ok {
		return refusal(s.loc, re.StatusCode, err)
	}
	return err
}

// azureMissing says whether err is Azure's answer for a blob that is not
// there.
func azureMissing(err error) bool {
	var re *azcore.ResponseError
	return bloberror.HasCode(err, bloberror.BlobNotFound) || errors.As(err, &re) && re.StatusCode == http.StatusNotFound && re.ErrorCode != string(bloberror.ContainerNotFound)
}

// azureUpload stages r in blocks of blockSize, azureConcurrency of them at
// a time (so a write holds that many blocks, whatever the blob's size), and
// commits the block list once every block is stored. Until then the blob
// is unchanged; blocks of a write that fails are never committed, and
// Azure discards them after a week.
func azureUpload(ctx context.Context, bb *blockblob.Client, r io.Reader, blockSize int, opts *WriteOptions) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Block IDs are 16 bytes like the UUIDs the SDK's own uploads use:
	// Azure refuses blocks of one blob whose IDs differ in length, and
	// blocks a dead attempt left uncommitted still count. A random half
	// keeps this write's blocks apart from theirs.
	var prefix [8]byte
	if _, err := rand.Read(prefix[:]); err != nil {
		return 0, err
	}
	var (
		ids   []string
		total int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
			cancel()
		}
		mu.Unlock()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return first
	}
	// free holds the buffers not in flight; taking one waits for a block
	// to finish when azureConcurrency are.
	free := make(chan *[]byte, azureConcurrency)
	for range azureConcurrency {
		free <- nil
	}
	defer func() {
		wg.Wait()
		close(free)
		for b := range free {
			if b != nil {
				putPart(b)
			}
		}
	}()
	for num := uint64(0); ; num++ {
		buf := <-free
		if buf == nil {
			buf = getPart(blockSize)
		}
		if err := failed(); err != nil {
			free <- buf
			wg.Wait()
			return total, err
		}
		n, end, err := fill(r, *buf)
		total += int64(n)
		if err != nil {
			free <- buf
			fail(err)
			wg.Wait()
			return total, failed()
		}
		if n == 0 {
			free <- buf
			break
		}
		if num >= maxParts {
			free <- buf
			fail(fmt.Errorf("more than %d blocks of %d bytes", maxParts, blockSize))
			wg.Wait()
			return total, failed()
		}
		var raw [16]byte
		copy(raw[:], prefix[:])
		binary.BigEndian.PutUint64(raw[8:], num)
		id := base64.StdEncoding.EncodeToString(raw[:])
		ids = append(ids, id)
		wg.Add(1)
		go func(body []byte) {
			defer wg.Done()
			_, err := bb.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(body)), nil)
			if err != nil {
				fail(fmt.Errorf("block %d: %w", num+1, err))
			}
			free <- buf
		}((*buf)[:n])
		if end {
			break
		}
	}
	wg.Wait()
	if err := failed(); err != nil {
		return total, err
	}
	md := make(map[string]*string, len(opts.Metadata))
	for k, v := range opts.Metadata {
		md[azureMetadataKey(k)] = new(url.PathEscape(v))
	}
	commit := &blockblob.CommitBlockListOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: &opts.ContentType},
		Metadata:    md,
	}
	if opts.IfAbsent {
		commit.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: new(azcore.ETagAny)}}
	}
	_, err := bb.CommitBlockList(ctx, ids, commit)
	return total, err
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
		Start: new(start.Format(sas.TimeFormat)), Expiry: new(end.Format(sas.TimeFormat)),
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

// azureClient makes the container client; the token credential is returned
// too when there is no shared key, because signing then needs it.
func azureClient(loc *Location, so *azureServiceURLOptions, creds map[string][]byte) (*container.Client, azcore.TokenCredential, error) {
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

func azureContainerURL(so *azureServiceURLOptions, containerName string) (string, error) {
	svc, err := azureServiceURL(so)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	u, err := url.JoinPath(svc, containerName)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	return u, nil
}
