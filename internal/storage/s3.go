package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// defaultS3Region signs requests when neither the URL nor the default chain
// names a region; S3-compatible servers mostly accept any region.
const defaultS3Region = "us-east-1"

// s3AbortTimeout bounds the AbortMultipartUpload sent after a failed write.
// It runs on a fresh context because the write's own context is the one
// that was cancelled to abort it.
const s3AbortTimeout = 30 * time.Second

// s3Params are the s3:// URL options.
type s3Params struct {
	region, endpoint, profile  string
	pathStyle, accelerate      bool
	anonymous, dualStack, fips bool
	sseType                    types.ServerSideEncryption
	kmsKeyID                   string
}

func parseS3Params(q url.Values) (*s3Params, error) {
	p := &s3Params{region: q.Get("region"), profile: q.Get("profile"), kmsKeyID: q.Get("kmskeyid")}
	bools := []struct {
		name string
		dst  *bool
	}{
		{"use_path_style", &p.pathStyle}, {"s3ForcePathStyle", &p.pathStyle}, {"accelerate", &p.accelerate},
		{"anonymous", &p.anonymous}, {"dualstack", &p.dualStack}, {"fips", &p.fips},
	}
	for _, b := range bools {
		if v := q.Get(b.name); v != "" {
			x, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %s=%q is not true or false", ErrInvalidURL, b.name, v)
			}
			*b.dst = *b.dst || x
		}
	}
	disableHTTPS := false
	if v := q.Get("disable_https"); v != "" {
		x, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%w: disable_https=%q is not true or false", ErrInvalidURL, v)
		}
		disableHTTPS = x
	}
	if sdk := q.Get("awssdk"); sdk != "" && sdk != "v2" && sdk != "V2" {
		return nil, fmt.Errorf("%w: awssdk=%q: only the AWS SDK v2 is supported", ErrInvalidURL, sdk)
	}
	if v := q.Get("sse_type"); v != "" {
		for _, t := range types.ServerSideEncryptionAes256.Values() {
			if strings.EqualFold(string(t), v) {
				p.sseType = t
			}
		}
		if p.sseType == "" {
			return nil, fmt.Errorf("%w: sse_type=%q is not one of %v", ErrInvalidURL, v, types.ServerSideEncryptionAes256.Values())
		}
	}
	ep, err := s3Endpoint(q.Get("endpoint"), disableHTTPS)
	if err != nil {
		return nil, err
	}
	p.endpoint = ep
	return p, nil
}

// s3Endpoint makes endpoint an absolute URL. disable_https only turns a
// scheme-less endpoint into http://: AWS itself is never spoken to in clear.
func s3Endpoint(endpoint string, disableHTTPS bool) (string, error) {
	if endpoint == "" {
		if disableHTTPS {
			return "", fmt.Errorf("%w: disable_https needs an endpoint (or write the endpoint as http://host:port)", ErrInvalidURL)
		}
		return "", nil
	}
	if !strings.Contains(endpoint, "://") {
		scheme := "https://"
		if disableHTTPS {
			scheme = "http://"
		}
		endpoint = scheme + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%w: endpoint %q is not an http(s) URL", ErrInvalidURL, endpoint)
	}
	if disableHTTPS && u.Scheme == "https" {
		return "", fmt.Errorf("%w: disable_https=true contradicts endpoint %q", ErrInvalidURL, endpoint)
	}
	return endpoint, nil
}

func openS3(ctx context.Context, loc *Location, creds map[string][]byte) (*s3Store, error) {
	p, err := parseS3Params(loc.Query)
	if err != nil {
		return nil, err
	}
	cfg, err := s3Config(ctx, p, creds)
	if err != nil {
		return nil, err
	}
	if p.endpoint != "" {
		// S3-compatible servers (Ceph RGW, older MinIO, ...) reject the
		// trailing checksums the SDK sends to AWS by default.
		cfg.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		cfg.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if p.endpoint != "" {
			o.BaseEndpoint = aws.String(p.endpoint)
		}
		o.UsePathStyle = p.pathStyle
		o.UseAccelerate = p.accelerate
		if p.dualStack {
			o.EndpointOptions.UseDualStackEndpoint = aws.DualStackEndpointStateEnabled
		}
		if p.fips {
			o.EndpointOptions.UseFIPSEndpoint = aws.FIPSEndpointStateEnabled
		}
	})
	s := &s3Store{loc: loc, client: client, presign: s3.NewPresignClient(client), sse: p.sseType, kmsKey: p.kmsKeyID}
	if cfg.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired {
		s.checksum = types.ChecksumAlgorithmCrc32
	}
	return s, nil
}

// s3Store is a Store on an S3 bucket, through the AWS SDK's client.
type s3Store struct {
	loc     *Location
	client  *s3.Client
	presign *s3.PresignClient
	sse     types.ServerSideEncryption
	kmsKey  string
	// checksum is the algorithm of the checksums sent with the data: CRC32
	// where the SDK would send them by default (AWS); none for S3-compatible
	// servers, many of which refuse them. Over plain http the SDK signs
	// each payload's SHA-256 either way.
	checksum types.ChecksumAlgorithm
}

var _ Store = (*s3Store)(nil)

func (s *s3Store) Write(ctx context.Context, key string, r io.Reader, opts WriteOptions) (int64, error) {
	if err := checkWrite(s.loc, key, &opts); err != nil {
		return 0, err
	}
	full := s.loc.Prefix + key
	abortStaleUploads(ctx, s.client, s.loc.Bucket, full)
	n, err := s.write(ctx, full, CtxReader{Ctx: ctx, R: r}, &opts)
	if s3PreconditionFailed(err) {
		err = fmt.Errorf("%w: %w", ErrExists, err)
	}
	if err != nil {
		return n, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), s.refusal(err))
	}
	abortStaleUploads(ctx, s.client, s.loc.Bucket, full)
	return n, nil
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(s.loc.Prefix + key)})
	if err != nil && !s3Missing(err) {
		return fmt.Errorf("deleting %s: %w", s.loc.ObjectURL(key), s.refusal(err))
	}
	return nil
}

func (s *s3Store) Size(ctx context.Context, key string) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(s.loc.Prefix + key)})
	if err != nil {
		return 0, s.readError(key, err)
	}
	return aws.ToInt64(out.ContentLength), nil
}

func (s *s3Store) Stat(ctx context.Context, key string) (*ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(s.loc.Prefix + key)})
	if err != nil {
		return nil, s.readError(key, err)
	}
	return &ObjectInfo{Size: aws.ToInt64(out.ContentLength), Metadata: lowerKeys(out.Metadata, url.PathUnescape)}, nil
}

// s3PreconditionFailed says whether err is S3's answer to a conditional
// write whose condition failed: 412 PreconditionFailed, or 409
// ConditionalRequestConflict when another conditional write of the key was
// under way.
func s3PreconditionFailed(err error) bool {
	if ae, ok := errors.AsType[smithy.APIError](err); ok {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return true
		}
	}
	if re, ok := errors.AsType[*smithyhttp.ResponseError](err); ok {
		return re.HTTPStatusCode() == http.StatusPreconditionFailed
	}
	return false
}

func (s *s3Store) Read(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(s.loc.Prefix + key)})
	if err != nil {
		return nil, s.readError(key, err)
	}
	return &objectReader{ReadCloser: out.Body, contentType: aws.ToString(out.ContentType)}, nil
}

// SignedURL presigns a GetObject (SigV4 in the query) without contacting S3.
func (s *s3Store) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if err := checkSign(s.loc, key, expiry); err != nil {
		return "", err
	}
	req, err := s.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(s.loc.Prefix + key)},
		s3.WithPresignExpires(expiry))
	if err != nil {
		return "", fmt.Errorf("signing %s: %w", s.loc.ObjectURL(key), err)
	}
	return req.URL, nil
}

// Close releases nothing: the client keeps no connections of its own
// beyond the SDK's shared transport.
func (s *s3Store) Close() error { return nil }

func (s *s3Store) readError(key string, err error) error {
	if s3Missing(err) {
		return notFound(s.loc, key)
	}
	return fmt.Errorf("reading %s: %w", s.loc.ObjectURL(key), s.refusal(err))
}

// refusal wraps 401 and 403 answers in ErrCredentials.
func (s *s3Store) refusal(err error) error {
	if re, ok := errors.AsType[*smithyhttp.ResponseError](err); ok {
		return refusal(s.loc, re.HTTPStatusCode(), err)
	}
	return err
}

// s3Missing says whether err is S3's answer for a key with no object:
// NoSuchKey from GetObject, NotFound (a bare 404) from HeadObject.
func s3Missing(err error) bool {
	if ae, ok := errors.AsType[smithy.APIError](err); ok {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	return false
}

// abortStaleUploads aborts the multipart uploads of fullKey that are still
// open. A write aborts its own upload when it fails, but a manager killed
// mid-write (kill -9, OOM, a lost node) cannot, and its parts would stay in
// the bucket, billed and invisible, until a lifecycle rule removes them. The
// manager writes a key once at a time (one leader, one upload per dump), so
// an upload of the key that is open when a new attempt starts, or after one
// has completed, is dead: the latter is an aborted upload that a part in
// flight at the abort reopened (S3 documents that an abort may have to be
// repeated). Best
// effort: without s3:ListBucketMultipartUploads the lifecycle rule remains
// the only cleanup, and the write goes on either way.
func abortStaleUploads(ctx context.Context, client *s3.Client, bucket, fullKey string) {
	out, err := client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket), Prefix: aws.String(fullKey)})
	if err != nil {
		return
	}
	for _, u := range out.Uploads {
		if aws.ToString(u.Key) != fullKey {
			continue
		}
		_, _ = client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: u.Key, UploadId: u.UploadId})
	}
}

// s3Config builds the SDK configuration. With a Secret it is built by hand
// from static keys, so nothing from the process environment or shared
// config files can leak into one policy's requests; without one, the SDK's
// default chain decides, as IRSA and instance roles need.
func s3Config(ctx context.Context, p *s3Params, creds map[string][]byte) (aws.Config, error) {
	if creds != nil {
		if p.profile != "" || p.anonymous {
			return aws.Config{}, fmt.Errorf("%w: profile= and anonymous= cannot be combined with a Secret", ErrInvalidURL)
		}
		region := p.region
		if region == "" {
			region = defaultS3Region
		}
		static := credentials.NewStaticCredentialsProvider(
			value(creds, KeyAWSAccessKeyID), value(creds, KeyAWSSecretAccessKey), value(creds, KeyAWSSessionToken))
		return aws.Config{Region: region, Credentials: aws.NewCredentialsCache(static)}, nil
	}
	var opts []func(*config.LoadOptions) error
	if p.region != "" {
		opts = append(opts, config.WithRegion(p.region))
	}
	if p.profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(p.profile))
	}
	if p.anonymous {
		opts = append(opts, config.WithCredentialsProvider(aws.AnonymousCredentials{}))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading the default AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = defaultS3Region
	}
	return cfg, nil
}
