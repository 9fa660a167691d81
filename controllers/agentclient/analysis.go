package agentclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/coredog/coredog/internal/wire"
)

// ErrBadAnalysis is returned when an agent's analysis is too large or not
// the JSON of one.
var ErrBadAnalysis = errors.New("the agent sent a malformed analysis")

// FetchAnalysis asks the agent of node at endpoint for the backtraces it computed
// for a dump. What comes back is the agent's word: read up to
// wire.MaxAnalysisBytes, decoded, and sanitised (wire.Analysis.Sanitize)
// before it is returned. An agent that has none answers 404 (ErrNotServed).
func (c *Client) FetchAnalysis(ctx context.Context, endpoint, node, name string) (*wire.Analysis, error) {
	if !wire.ValidName(name) {
		return nil, fmt.Errorf("invalid dump name %q", name)
	}
	resp, err := c.get(ctx, endpoint, node, wire.DumpsPath+name+wire.AnalysisSuffix, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("fetching the analysis of %s: %w", name, ctx.Err())
		}
		return nil, fmt.Errorf("%w: analysis of %s", err, name)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxAnalysisBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the analysis of %s", ErrUnreachable, name)
	}
	if len(body) > wire.MaxAnalysisBytes {
		return nil, fmt.Errorf("%w: over %d bytes", ErrBadAnalysis, wire.MaxAnalysisBytes)
	}
	var a wire.Analysis
	if err := json.Unmarshal(body, &a); err != nil {
		// Not the decoder's message: it quotes the agent's bytes.
		return nil, fmt.Errorf("%w: not JSON of an analysis", ErrBadAnalysis)
	}
	a.Sanitize()
	return &a, nil
}
