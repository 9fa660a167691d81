package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// s3SmallRead is what a write reads before it takes a part buffer.
const s3SmallRead = 1 << 20

// write stores r, at most sizeHint bytes (0: unknown), at fullKey, in parts
// of s3PartSize, with the S3 client itself rather than through gocloud and
// the SDK's transfer manager, for memory: the transfer manager reads its
// first part with io.ReadAll (a buffer doubled up to the part size, about
// three part sizes allocated) and then fills a pool of Concurrency+1 more,
// so one 8 MiB-part upload allocated about 55 MiB and kept 24 MiB live.
// Here a write holds one part buffer and a small read-ahead (see upload).
//
// The requests are those the transfer manager sends with Concurrency 1: a
// PutObject when the object fits in one part, otherwise a multipart upload
// that is aborted, on a fresh context, when anything fails. Every request
// goes through the client's retryer, which resends a part from its buffer.
// The metadata is escaped as gocloud's s3blob escaped it, so that objects
// read the same whichever wrote them.
func (s *s3Store) write(ctx context.Context, fullKey string, r io.Reader, opts *WriteOptions) (int64, error) {
	sizeHint, contentType := opts.SizeHint, opts.ContentType
	var ifNoneMatch *string
	if opts.IfAbsent {
		ifNoneMatch = aws.String("*")
	}
	md := make(map[string]string, len(opts.Metadata))
	for k, v := range opts.Metadata {
		// checkMetadata allows only letters, digits, - and _ in keys.
		md[k] = url.PathEscape(v)
	}
	// Most objects are small (metadata, dumps of small processes): they
	// are read into a small buffer first, and a part buffer is taken only
	// for an object that outgrows it.
	small := getPart(s3SmallRead)
	n, end, err := fill(r, *small)
	if err != nil || end {
		defer putPart(small)
		if err != nil {
			return int64(n), err
		}
		return int64(n), s.putObject(ctx, fullKey, (*small)[:n], contentType, md, ifNoneMatch)
	}
	// small stays, as the read-ahead of the upload.
	first := getPart(s3PartSize(1, sizeHint))
	copy(*first, (*small)[:n])
	m, end, err := fill(r, (*first)[n:])
	n += m
	if err != nil || end {
		defer putPart(first)
		defer putPart(small)
		if err != nil {
			return int64(n), err
		}
		return int64(n), s.putObject(ctx, fullKey, (*first)[:n], contentType, md, ifNoneMatch)
	}
	up, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:               aws.String(s.loc.Bucket),
		Key:                  aws.String(fullKey),
		ContentType:          aws.String(contentType),
		Metadata:             md,
		ServerSideEncryption: s.sse,
		SSEKMSKeyId:          s.kmsKeyID(),
		ChecksumAlgorithm:    s.checksum,
	})
	if err != nil {
		putPart(first)
		putPart(small)
		return int64(n), err
	}
	mp := &s3Multipart{s3Store: s, key: fullKey, id: up.UploadId, sizeHint: sizeHint, ifNoneMatch: ifNoneMatch}
	total, err := mp.upload(ctx, r, first, n, small)
	if err != nil {
		mp.abort()
		return total, err
	}
	return total, nil
}

// s3PartSize is the size of part num (from 1) of an object of at most
// sizeHint bytes (0: unknown). The first fewParts/2 parts are minPartSize,
// S3's smallest: 1.875 GiB, more than most dumps compress to, so a write
// holds one 5 MiB part whatever the dump's raw size. Later parts are large
// enough that an object of sizeHint bytes fits in fewParts parts in all
// (6 MiB for 4 GiB), or defaultPartSize when the size is not known (which
// allows 77 GiB); objects of at most fewParts*minPartSize never need them.
func s3PartSize(num int32, sizeHint int64) int {
	const early = fewParts / 2
	if num <= early || sizeHint > 0 && sizeHint <= fewParts*minPartSize {
		return minPartSize
	}
	if sizeHint <= 0 {
		return defaultPartSize
	}
	const mib = 1 << 20
	per := ((sizeHint-early*minPartSize)/(fewParts-early) + mib) / mib * mib
	return int(min(maxPartSize, max(minPartSize, per)))
}

// putObject stores body in one request; ifNoneMatch "*" only if no object
// is at the key.
func (s *s3Store) putObject(ctx context.Context, fullKey string, body []byte, contentType string, md map[string]string, ifNoneMatch *string) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		IfNoneMatch:          ifNoneMatch,
		Bucket:               aws.String(s.loc.Bucket),
		Key:                  aws.String(fullKey),
		Body:                 bytes.NewReader(body),
		ContentLength:        aws.Int64(int64(len(body))),
		ContentType:          aws.String(contentType),
		Metadata:             md,
		ServerSideEncryption: s.sse,
		SSEKMSKeyId:          s.kmsKeyID(),
		ChecksumAlgorithm:    s.checksum,
	})
	return err
}

func (s *s3Store) kmsKeyID() *string {
	if s.kmsKey == "" {
		return nil
	}
	return aws.String(s.kmsKey)
}

// s3Multipart is one multipart upload under way.
type s3Multipart struct {
	*s3Store
	key      string
	id       *string
	sizeHint int64
	parts    []types.CompletedPart
	// ifNoneMatch "*" completes the upload only if no object is at the
	// key; the parts are then aborted like those of any failed write.
	ifNoneMatch *string
}

type partResult struct {
	part types.CompletedPart
	err  error
}

// upload sends the first n bytes of cur, which are a whole part, as part 1,
// and each next part in turn, and completes the upload. While a part goes
// up it reads the next part's first len(ahead) bytes into ahead, and the
// agent's stream waits in the sockets' buffers (the kernel's, not this
// process's); once the part is stored, its buffer takes the next part.
// One part buffer and a small one, rather than a second part read while
// the first uploads, keep a write at about 6 MiB. It returns the bytes
// read from r, and the buffers it used to the pool.
func (m *s3Multipart) upload(ctx context.Context, r io.Reader, cur *[]byte, n int, ahead *[]byte) (int64, error) {
	defer func() {
		putPart(cur)
		putPart(ahead)
	}()
	total := int64(n)
	end := false
	done := make(chan partResult, 1)
	for num := int32(1); ; num++ {
		if num > maxParts {
			return total, fmt.Errorf("more than %d parts", maxParts)
		}
		go func(num int32, body []byte) { done <- m.send(ctx, num, body) }(num, (*cur)[:n])
		k := 0
		var rerr error
		if !end {
			k, end, rerr = fill(r, *ahead)
			total += int64(k)
		}
		sent := <-done
		if rerr != nil {
			return total, rerr
		}
		if sent.err != nil {
			return total, sent.err
		}
		m.parts = append(m.parts, sent.part)
		if k == 0 {
			break
		}
		if size := s3PartSize(num+1, m.sizeHint); len(*cur) != size {
			putPart(cur)
			cur = getPart(size)
		}
		n = copy(*cur, (*ahead)[:k])
		if !end {
			var more int
			more, end, rerr = fill(r, (*cur)[n:])
			n += more
			total += int64(more)
			if rerr != nil {
				return total, rerr
			}
		}
	}
	_, err := m.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(m.loc.Bucket),
		Key:             aws.String(m.key),
		UploadId:        m.id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: m.parts},
		IfNoneMatch:     m.ifNoneMatch,
	})
	return total, err
}

func (m *s3Multipart) send(ctx context.Context, num int32, body []byte) partResult {
	out, err := m.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket:            aws.String(m.loc.Bucket),
		Key:               aws.String(m.key),
		UploadId:          m.id,
		PartNumber:        aws.Int32(num),
		Body:              bytes.NewReader(body),
		ContentLength:     aws.Int64(int64(len(body))),
		ChecksumAlgorithm: m.checksum,
	})
	if err != nil {
		return partResult{err: fmt.Errorf("part %d: %w", num, err)}
	}
	return partResult{part: types.CompletedPart{
		PartNumber:    aws.Int32(num),
		ETag:          out.ETag,
		ChecksumCRC32: out.ChecksumCRC32,
	}}
}

// abort drops the upload's parts. It runs on a fresh context: the write's
// own is often the one that was cancelled.
func (m *s3Multipart) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), s3AbortTimeout)
	defer cancel()
	_, _ = m.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket:   aws.String(m.loc.Bucket),
		Key:      aws.String(m.key),
		UploadId: m.id,
	})
}
