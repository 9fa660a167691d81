//go:build nodesuite

package node

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

const (
	releaseNS   = "coredog-system"
	release     = "coredog"
	s3Port      = 9000
	s3Bucket    = "coredog-node"
	s3Region    = "us-east-1"
	s3AccessKey = "coredog-node"
	s3SecretKey = "coredog-node-secret-0123456789"
	s3Secret    = "coredog-s3"

	// observeDir is the Observe policy's hostPath, pipeDir the Pipe one's
	// (at most 73 bytes; every directory above it root's and 0755).
	observeDir = StateRoot + "/observe"
	pipeDir    = StateRoot + "/cores"
)

// Images the suite imports from dist/images (`make images`).
var (
	coredogImage = "ghcr.io/coredog/coredog:" + imageTag
	crasherImage = "coredog.test/crasher:v1"
	imageTag     = "dev"
)

var s3c *s3.Client

// s3Endpoint is the S3 server as pods and the host reach it.
func s3Endpoint() string { return fmt.Sprintf("http://%s:%d", NodeIP, s3Port) }

// storageURL is the policies' storage URL.
func storageURL() string {
	return fmt.Sprintf("s3://%s?region=%s&endpoint=%s&use_path_style=true", s3Bucket, s3Region, s3Endpoint())
}

// setUp imports the images into the node's containerd and starts the S3
// server in the node's network namespace.
func setUp(ctx context.Context) error {
	t0 := time.Now()
	tars, err := filepath.Glob(filepath.Join(imagesDir, "*.tar"))
	if err != nil {
		return err
	}
	if len(tars) == 0 {
		return fmt.Errorf("no image tarballs in %s: run `make images`", imagesDir)
	}
	for _, tar := range tars {
		if err := nd.ImportImage(ctx, tar); err != nil {
			return err
		}
	}
	out, err := nd.Ctr(ctx, "images", "ls", "-q")
	if err != nil {
		return err
	}
	for _, want := range []string{PauseImage, coredogImage, crasherImage} {
		if !strings.Contains("\n"+out, "\n"+want+"\n") {
			return fmt.Errorf("image %s is not among those imported from %s:\n%s", want, imagesDir, out)
		}
	}
	if err := importToolbox(ctx, nd.Dir); err != nil {
		return fmt.Errorf("the toolbox image: %w", err)
	}
	logf("imported %d images and the toolbox in %s", len(tars), time.Since(t0).Round(time.Millisecond))

	dir := filepath.Join(nd.Dir, "s3")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p, err := nd.StartInNode("versitygw", bins.versitygw,
		[]string{"ROOT_ACCESS_KEY_ID=" + s3AccessKey, "ROOT_SECRET_ACCESS_KEY=" + s3SecretKey},
		"--port", fmt.Sprintf("%s:%d", NodeIP, s3Port), "posix", dir)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		if p.Exited() {
			return fmt.Errorf("versitygw exited:\n%s", p.Tail(30))
		}
		// Any answer will do: an anonymous GET / is refused with 403.
		resp, err := hc.Get(s3Endpoint() + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw did not answer within a minute: %v\n%s", err, p.Tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	s3c = s3.New(s3.Options{
		Region:                     s3Region,
		BaseEndpoint:               aws.String(s3Endpoint()),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(s3AccessKey, s3SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	_, err = s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s3Bucket)})
	return err
}
