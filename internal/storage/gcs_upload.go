package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Uploads. An object that ends within its first chunk goes up in one
// multipart request, with its CRC32C for GCS to check. Larger ones go
// through a resumable upload session
// (https://cloud.google.com/storage/docs/performing-resumable-uploads): one
// chunk is buffered and PUT at a time, a chunk that fails with 408, 429, 5xx
// or a broken connection is sent again from where the session says it
// stands, and on any failure the session is cancelled, so that nothing
// complete appears at the key.

// gcsChunkAlign is the unit of resumable-upload chunks: every chunk but the
// last must be a multiple of it.
const gcsChunkAlign = 256 << 10

// gcsSmallRead is what a write reads before it commits to a chunk-sized
// buffer: objects that end within it (the metadata sidecars) cost no more.
const gcsSmallRead = 64 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// upload streams r into meta.Name in chunks of chunkSize bytes.
func (s *gcsStore) upload(ctx context.Context, r io.Reader, meta gcsObjectMeta, chunkSize int) (int64, error) {
	if chunkSize%gcsChunkAlign != 0 || chunkSize < gcsSmallRead {
		return 0, fmt.Errorf("chunk size %d is not a multiple of %d", chunkSize, gcsChunkAlign)
	}
	// fill, not io.ReadFull: a truncated stream must fail the write.
	small := make([]byte, gcsSmallRead)
	n, end, err := fill(r, small)
	if err != nil {
		return 0, err
	}
	if end {
		return s.uploadOnce(ctx, meta, small[:n])
	}
	// The chunk buffer is reused from one write to the next, as S3's parts
	// and Azure's blocks are.
	bp := getPart(chunkSize)
	defer putPart(bp)
	buf := *bp
	copy(buf, small)
	m, end, err := fill(r, buf[n:])
	n += m
	if err != nil {
		return 0, err
	}
	if end {
		return s.uploadOnce(ctx, meta, buf[:n])
	}
	// An object of exactly one chunk still fits one request.
	var peek [1]byte
	if _, err := io.ReadFull(r, peek[:]); err == io.EOF {
		return s.uploadOnce(ctx, meta, buf)
	} else if err != nil {
		return 0, err
	}
	return s.uploadResumable(ctx, io.MultiReader(bytes.NewReader(peek[:]), r), meta, buf)
}

// uploadOnce stores data in one multipart/related request.
func (s *gcsStore) uploadOnce(ctx context.Context, meta gcsObjectMeta, data []byte) (int64, error) {
	meta.CRC32C = crc32cString(crc32.Checksum(data, castagnoli))
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return 0, err
	}
	var rnd [16]byte
	_, _ = rand.Read(rnd[:])
	boundary := "coredog-" + hex.EncodeToString(rnd[:])
	head := []byte("--" + boundary + "\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n" + string(metaJSON) +
		"\r\n--" + boundary + "\r\nContent-Type: " + meta.ContentType + "\r\n\r\n")
	tail := []byte("\r\n--" + boundary + "--\r\n")
	resp, err := s.do(ctx, func() (*http.Request, error) {
		body := io.MultiReader(bytes.NewReader(head), bytes.NewReader(data), bytes.NewReader(tail))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.apiURL("upload", "", url.Values{"uploadType": {"multipart"}}), body)
		if err != nil {
			return nil, err
		}
		req.ContentLength = int64(len(head) + len(data) + len(tail))
		req.Header.Set("Content-Type", "multipart/related; boundary="+boundary)
		return req, nil
	})
	if err != nil {
		return 0, err
	}
	var o gcsObject
	if err := decodeJSON(resp, &o); err != nil {
		return 0, err
	}
	if err := checkStored(&o, int64(len(data)), meta.CRC32C); err != nil {
		s.removeGeneration(ctx, meta.Name, o.Generation)
		return 0, err
	}
	return int64(len(data)), nil
}

// uploadResumable uploads buf, which is full, and the rest of r through a
// resumable session, buf being the one chunk in memory.
func (s *gcsStore) uploadResumable(ctx context.Context, r io.Reader, meta gcsObjectMeta, buf []byte) (written int64, err error) {
	sess, err := s.startSession(ctx, meta)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			sess.cancel(ctx)
		}
	}()
	crc := crc32.New(castagnoli)
	var (
		off  int64 // where buf starts in the object
		n    = len(buf)
		peek [1]byte
	)
	for {
		// A full chunk is the last one when r has nothing more: one byte is
		// read ahead to know, and carried into the next chunk.
		final, carried := n < len(buf), false
		if !final {
			k, err := io.ReadFull(r, peek[:])
			switch {
			case err == io.EOF:
				final = true
			case err != nil:
				return off, err
			default:
				carried = k == 1
			}
		}
		_, _ = crc.Write(buf[:n])
		total := int64(-1)
		if final {
			total = off + int64(n)
		}
		o, err := sess.put(ctx, off, buf[:n], total)
		if err != nil {
			return off, err
		}
		off += int64(n)
		if final {
			if err := checkStored(o, off, crc32cString(crc.Sum32())); err != nil {
				s.removeGeneration(ctx, meta.Name, o.Generation)
				return off, err
			}
			return off, nil
		}
		n = 0
		if carried {
			buf[0], n = peek[0], 1
		}
		m, _, err := fill(r, buf[n:])
		n += m
		if err != nil {
			return off, err
		}
	}
}

// checkStored compares what GCS says it stored with what was sent.
func checkStored(o *gcsObject, size int64, crc string) error {
	if o.Size != strconv.FormatInt(size, 10) {
		return fmt.Errorf("%w: GCS stored %s bytes of %d", errGCSProtocol, o.Size, size)
	}
	if o.CRC32C != "" && o.CRC32C != crc {
		return fmt.Errorf("%w: GCS stored content with CRC32C %s, the data sent has %s", errGCSProtocol, o.CRC32C, crc)
	}
	return nil
}

// removeGeneration deletes what a write stored but cannot vouch for, and
// only that generation, never a newer object at the key.
func (s *gcsStore) removeGeneration(ctx context.Context, name, generation string) {
	if generation == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gcsCleanupTimeout)
	defer cancel()
	_ = s.deleteObject(ctx, name, generation) // The write fails anyway; its error says why.
}

func crc32cString(sum uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], sum)
	return base64.StdEncoding.EncodeToString(b[:])
}

// gcsSession is a resumable upload session.
type gcsSession struct {
	s    *gcsStore
	uri  string
	name string
	// finalSent is set once the last chunk went out: from then on the
	// object may exist even when no answer came back.
	finalSent bool
}

// startSession opens a resumable upload of meta.
func (s *gcsStore) startSession(ctx context.Context, meta gcsObjectMeta) (*gcsSession, error) {
	body, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	resp, err := s.do(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost,
			s.apiURL("upload", "", url.Values{"uploadType": {"resumable"}, "name": {meta.Name}}), bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json; charset=UTF-8")
		req.Header.Set("X-Upload-Content-Type", meta.ContentType)
		return req, nil
	})
	if err != nil {
		return nil, fmt.Errorf("starting a resumable upload: %w", err)
	}
	drain(resp)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusOK || err != nil || (loc.Scheme != "https" && loc.Scheme != "http") || loc.Host == "" {
		return nil, fmt.Errorf("%w: HTTP %d to a resumable upload without a session URI", errGCSProtocol, resp.StatusCode)
	}
	return &gcsSession{s: s, uri: loc.String(), name: meta.Name}, nil
}

// put sends data, which starts at off, and makes sure the session holds it
// all: after a transient failure it asks the session how far it got and
// sends the rest. total is the object's size when data is its end, -1
// otherwise; then put returns the stored object.
func (u *gcsSession) put(ctx context.Context, off int64, data []byte, total int64) (*gcsObject, error) {
	end := off + int64(len(data))
	held := off // what the session holds, as far as known
	failures := 0
	for {
		u.finalSent = u.finalSent || total >= 0
		o, got, err := u.send(ctx, held, data[held-off:], total)
		for err != nil {
			failures++
			if !retryable(ctx, err) || failures >= gcsMaxAttempts {
				return nil, err
			}
			if err := u.s.sleep(ctx, failures); err != nil {
				return nil, err
			}
			o, got, err = u.send(ctx, -1, nil, -1)
		}
		if o != nil {
			if total < 0 {
				return nil, fmt.Errorf("%w: the upload session completed after %d bytes, before the end of the object", errGCSProtocol, got)
			}
			return o, nil
		}
		if got < off || got > end {
			return nil, fmt.Errorf("%w: the upload session holds %d bytes; this chunk is bytes %d to %d", errGCSProtocol, got, off, end)
		}
		held = got
		if held == end && total < 0 {
			return nil, nil
		}
		// Otherwise the session kept only part of the chunk, or (the last
		// chunk) holds it all without having completed: send the rest, or
		// an empty request that completes the object.
	}
}

// send PUTs data at off, or asks where the session stands when off is -1.
// It returns the object when the upload is complete, or how many bytes the
// session holds.
func (u *gcsSession) send(ctx context.Context, off int64, data []byte, total int64) (*gcsObject, int64, error) {
	size := "*"
	if total >= 0 {
		size = strconv.FormatInt(total, 10)
	}
	var rng string
	switch {
	case off < 0:
		rng = "bytes */*"
	case len(data) == 0:
		rng = "bytes */" + size
	default:
		rng = fmt.Sprintf("bytes %d-%d/%s", off, off+int64(len(data))-1, size)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.uri, bytes.NewReader(data))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Range", rng)
	resp, err := u.s.send(req)
	if err != nil {
		if c := statusCode(err); c == http.StatusNotFound || c == http.StatusGone {
			return nil, 0, fmt.Errorf("%w: the upload session expired or was cancelled: %w", errGCSProtocol, err)
		}
		return nil, 0, err
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusCreated:
		var o gcsObject
		if err := decodeJSON(resp, &o); err != nil {
			return nil, 0, err
		}
		return &o, 0, nil
	case http.StatusPermanentRedirect:
		drain(resp)
		got, err := parseHeldRange(resp.Header.Get("Range"))
		return nil, got, err
	}
	drain(resp)
	return nil, 0, fmt.Errorf("%w: HTTP %d to an upload chunk", errGCSProtocol, resp.StatusCode)
}

// parseHeldRange reads a 308's Range header, "bytes=0-N" for N+1 bytes
// held; no header means none.
func parseHeldRange(h string) (int64, error) {
	if h == "" {
		return 0, nil
	}
	last, ok := strings.CutPrefix(h, "bytes=0-")
	n, err := strconv.ParseInt(last, 10, 64)
	if !ok || err != nil || n < 0 {
		return 0, fmt.Errorf("%w: Range %q in an upload session's answer", errGCSProtocol, h)
	}
	return n + 1, nil
}

// cancel ends a failed upload, also when ctx is done: GCS drops the bytes
// the session holds. When the last chunk went out, the object may have been
// completed without the answer arriving; then that generation is deleted.
func (u *gcsSession) cancel(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gcsCleanupTimeout)
	defer cancel()
	if u.finalSent {
		if o, _, err := u.send(ctx, -1, nil, -1); err == nil && o != nil {
			u.s.removeGeneration(ctx, u.name, o.Generation)
			return
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u.uri, nil)
	if err != nil {
		return
	}
	// GCS answers 499 when the session is cancelled; the session expires
	// within a week whatever the answer, without an object.
	if resp, err := u.s.client.Do(req); err == nil {
		drain(resp)
	}
}
