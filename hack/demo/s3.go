package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/coredog/coredog/internal/storage"
	"github.com/coredog/coredog/test/localcluster"
)

// s3Server is the versitygw process the demo stores into with S3=1.
type s3Server struct {
	endpoint string
	// root is versitygw's posix directory: one subdirectory per bucket.
	root   string
	client *s3.Client
}

// list returns "size  key" for every object in bucket.
func (s *s3Server) list(ctx context.Context, bucket string) ([]string, error) {
	var out []string
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing bucket %s: %w", bucket, err)
		}
		for _, o := range page.Contents {
			out = append(out, fmt.Sprintf("%9d  %s", aws.ToInt64(o.Size), aws.ToString(o.Key)))
		}
	}
	return out, nil
}

func (d *demo) stepS3(ctx context.Context) error {
	d.p.linef("hack/versitygw.sh builds the versitygw S3 server from its Go module when it is missing")
	d.p.linef("(about a minute the first time); later runs reuse it.")
	bin, err := d.script(ctx, "hack/versitygw.sh")
	if err != nil {
		return err
	}
	d.p.linef("versitygw: %s", bin)

	port, err := localcluster.FreePort()
	if err != nil {
		return err
	}
	s := &s3Server{endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), root: filepath.Join(d.dir, "s3")}
	if err := os.MkdirAll(s.root, 0o700); err != nil {
		return err
	}
	access, secret := "demo"+randomHex(8), randomHex(20)
	// The posix backend keeps object metadata in extended attributes; where
	// the file system has none (tmpfs on older kernels) it takes a sidecar
	// directory instead.
	backend := []string{"posix"}
	if !userXattrs(s.root) {
		meta := filepath.Join(d.dir, "s3-meta")
		if err := os.MkdirAll(meta, 0o700); err != nil {
			return err
		}
		backend = append(backend, "--sidecar", meta)
		d.p.linef("(%s has no user extended attributes; versitygw keeps metadata in %s)", s.root, meta)
	}
	args := append([]string{"--port", fmt.Sprintf("127.0.0.1:%d", port)}, append(backend, s.root)...)
	env := []string{"ROOT_ACCESS_KEY_ID=" + access, "ROOT_SECRET_ACCESS_KEY=" + secret}
	p, err := d.startProcess("versitygw", bin, args, env)
	if err != nil {
		return err
	}
	d.p.linef("started versitygw (pid %d): ROOT_ACCESS_KEY_ID=… ROOT_SECRET_ACCESS_KEY=… versitygw %s", p.Cmd.Process.Pid, strings.Join(args, " "))
	d.p.linef("(root credentials made up for this run)")

	if err := d.within(ctx, "waiting for versitygw to answer at "+s.endpoint, startTimeout, func(ctx context.Context) error {
		hc := &http.Client{Timeout: time.Second}
		return poll(ctx, 100*time.Millisecond, func() (bool, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.endpoint+"/", nil)
			if err != nil {
				return false, err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return false, nil
			}
			resp.Body.Close()
			return true, nil // any answer (anonymous requests get 403) means it is up
		})
	}); err != nil {
		return err
	}

	client := s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(access, secret, ""),
	})
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := client.CreateBucket(cctx, &s3.CreateBucketInput{Bucket: aws.String(s3Bucket)}); err != nil {
		return fmt.Errorf("creating bucket %s: %w", s3Bucket, err)
	}
	d.p.linef("created bucket %s at %s (aws-sdk-go-v2 CreateBucket)", s3Bucket, s.endpoint)
	s.client = client
	d.s3 = s
	d.storageURL = fmt.Sprintf("s3://%s?region=us-east-1&endpoint=%s&use_path_style=true", s3Bucket, s.endpoint)
	d.creds = map[string][]byte{
		storage.KeyAWSAccessKeyID:     []byte(access),
		storage.KeyAWSSecretAccessKey: []byte(secret),
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// userXattrs reports whether dir's file system takes user extended attributes.
func userXattrs(dir string) bool {
	err := syscall.Setxattr(dir, "user.coredog-demo", []byte("1"), 0)
	if err != nil {
		return !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.EOPNOTSUPP)
	}
	_ = syscall.Removexattr(dir, "user.coredog-demo")
	return true
}
