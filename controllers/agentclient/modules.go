package agentclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-logr/logr"

	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/wire"
)

// maxRangeRequests bounds the ranged reads of one module (buildid.Read
// makes a handful); maxRangeBytes bounds what they hold in memory.
const (
	maxRangeRequests = 64
	maxRangeBytes    = 4 << 20
)

// get sends a GET to the agent; only 200 and 206 come back as responses.
// get asks the agent of node at endpoint for path. Like Fetch, it talks
// only to an agent whose certificate names node, on a connection of its own,
// and follows no redirect.
func (c *Client) get(ctx context.Context, endpoint, node, path string, hdr http.Header) (*http.Response, error) {
	base, err := agentlease.ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	u := base.JoinPath(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	maps.Copy(req.Header, hdr)
	hc := &http.Client{Transport: c.transport(node), CheckRedirect: refuseRedirect}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		logr.FromContextOrDiscard(ctx).Info("Cannot reach an agent", "endpoint", base.Host, "err", err.Error())
		return nil, ErrUnreachable
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent:
		return resp, nil
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, ErrNotServed
	}
	resp.Body.Close()
	return nil, fmt.Errorf("%w: HTTP %d", ErrRefused, resp.StatusCode)
}

// Modules asks the agent for the modules of a dump. The list is the
// agent's word: at most wire.MaxModuleListBytes of strict JSON; the caller
// bounds and escapes every field before using it.
func (c *Client) Modules(ctx context.Context, endpoint, node, name string) ([]wire.Module, error) {
	if !wire.ValidName(name) {
		return nil, fmt.Errorf("invalid dump name %q", name)
	}
	resp, err := c.get(ctx, endpoint, node, wire.DumpsPath+name+wire.ModulesSuffix, nil)
	if err != nil {
		return nil, fmt.Errorf("the modules of %s: %w", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxModuleListBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: the modules of %s", ErrUnreachable, name)
	}
	if len(body) > wire.MaxModuleListBytes {
		return nil, fmt.Errorf("%w: the module list of %s is over %d bytes", ErrIntegrity, name, wire.MaxModuleListBytes)
	}
	var mods []wire.Module
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&mods); err != nil {
		return nil, fmt.Errorf("%w: the module list of %s does not parse", ErrIntegrity, name)
	}
	return mods, nil
}

// Module is a module file on an agent, read in ranges to check its
// build-id before it is fetched whole (Open). What the ranged reads saw is
// kept, and the whole file must agree with it byte for byte, so the
// build-id checked is the build-id of what is stored.
type Module struct {
	c        *Client
	ctx      context.Context
	endpoint string
	node     string
	path     string
	// Size is the file's size, as the agent's first answer gave it.
	Size     int64
	requests int
	held     int
	seen     []region
}

type region struct {
	off  int64
	data []byte
}

// Module opens the file the agent collected for build-id id. It fails
// with ErrNotServed when the agent does not serve it, and with
// ErrIntegrity when the agent's answers do not describe a file of at most
// wire.MaxModuleBytes.
func (c *Client) Module(ctx context.Context, endpoint, node, id string) (*Module, error) {
	if !buildid.Valid(id) {
		return nil, fmt.Errorf("invalid build-id %q", id)
	}
	m := &Module{c: c, ctx: ctx, endpoint: endpoint, node: node, path: wire.BuildIDPath + id, Size: -1}
	// The first ranged read learns the size from Content-Range.
	if _, err := m.ReadAt(make([]byte, 1), 0); err != nil {
		return nil, err
	}
	return m, nil
}

// ReadAt reads len(p) bytes at off with a Range request.
func (m *Module) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if m.Size >= 0 && off >= m.Size {
		return 0, io.EOF
	}
	m.requests++
	m.held += len(p)
	if m.requests > maxRangeRequests || m.held > maxRangeBytes || off < 0 {
		return 0, fmt.Errorf("%w: reading the module takes more than the bounds allow", ErrIntegrity)
	}
	want := int64(len(p))
	if m.Size >= 0 {
		want = min(want, m.Size-off)
	}
	hdr := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", off, off+want-1)}}
	resp, err := m.c.get(m.ctx, m.endpoint, m.node, m.path, hdr)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	start, total, ok := contentRange(resp.Header.Get("Content-Range"))
	if resp.StatusCode != http.StatusPartialContent || !ok || start != off || total > wire.MaxModuleBytes || (m.Size >= 0 && total != m.Size) {
		return 0, fmt.Errorf("%w: the agent's answer to a ranged read does not fit", ErrIntegrity)
	}
	m.Size = total
	n, err := io.ReadFull(io.LimitReader(resp.Body, want), p[:want])
	if err != nil {
		return n, fmt.Errorf("%w: a ranged read of the module was cut", ErrIntegrity)
	}
	m.seen = append(m.seen, region{off: off, data: bytes.Clone(p[:n])})
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// contentRange parses "bytes <start>-<end>/<total>".
func contentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	span, tot, found := strings.Cut(rest, "/")
	s, _, found2 := strings.Cut(span, "-")
	if !found || !found2 {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	return start, total, err1 == nil && err2 == nil && start >= 0 && total > 0
}

// Open fetches the whole file. The reader fails, instead of ending
// cleanly, when the file is not Size bytes or differs anywhere from what
// the ranged reads saw.
func (m *Module) Open() (io.ReadCloser, error) {
	resp, err := m.c.get(m.ctx, m.endpoint, m.node, m.path, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || resp.ContentLength != m.Size {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: the module is not the size the agent said", ErrIntegrity)
	}
	return &checkedBody{body: resp.Body, size: m.Size, seen: m.seen}, nil
}

// checkedBody passes a module's bytes on and checks them against what the
// ranged reads saw.
type checkedBody struct {
	body io.ReadCloser
	size int64
	pos  int64
	seen []region
}

var errChangedModule = fmt.Errorf("%w: the module changed between reads", ErrIntegrity)

func (b *checkedBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if int64(n) > b.size-b.pos {
		return 0, fmt.Errorf("%w: the module is longer than the agent said", ErrIntegrity)
	}
	got := p[:n]
	for _, r := range b.seen {
		lo, hi := max(r.off, b.pos), min(r.off+int64(len(r.data)), b.pos+int64(n))
		if lo < hi && !bytes.Equal(got[lo-b.pos:hi-b.pos], r.data[lo-r.off:hi-r.off]) {
			return 0, errChangedModule
		}
	}
	b.pos += int64(n)
	if errors.Is(err, io.EOF) && b.pos != b.size {
		return n, fmt.Errorf("%w: the module was cut short", ErrIntegrity)
	}
	return n, err
}

func (b *checkedBody) Close() error { return b.body.Close() }
