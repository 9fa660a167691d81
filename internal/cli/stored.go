package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/storage"
)

// maxStoredMetadata bounds what is read of a dump's <key>.json: the
// manager writes at most 1 MiB; the bucket is not trusted to stop.
const maxStoredMetadata = 1 << 20

// storedMetadataTimeout bounds the read, so that describe and debug, which
// show the API's view without storage, never hang on a store.
const storedMetadataTimeout = 15 * time.Second

// storedDoc is what the plugin reads of a dump's <key>.json.
type storedDoc struct {
	Spec      coredogv1.StoredCoreDumpSpec `json:"spec"`
	LastWords struct {
		Container string `json:"container"`
		Run       string `json:"run"`
		Bytes     int    `json:"bytes"`
		Note      string `json:"note"`
	} `json:"lastWords"`
}

// stored is what describe and debug read from storage next to a dump.
type stored struct {
	doc storedDoc
	// log is the crashed container's log (<key>.log), at most
	// storage.MaxLogBytes; logErr says why there is none.
	log    []byte
	logErr error
}

// storedSidecars reads the metadata file (and, with withLog, the
// container's log) stored next to cd's dump, with the caller's own storage
// credentials (as download does): the CoreDump object holds neither the
// command line nor the log. storageURL overrides the policy's bucket URL,
// as --storage-url does.
func (a *app) storedSidecars(ctx context.Context, cd *coredogv1.CoreDump, storageURL string, withLog bool) (*stored, error) {
	st, err := storedObject(cd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, storedMetadataTimeout)
	defer cancel()
	store, loc, key, err := a.openDumpStore(ctx, cd, st, storageURL)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	metaKey := storage.SidecarKey(key)
	data, err := readBounded(ctx, store, metaKey, maxStoredMetadata)
	if err != nil {
		return nil, storeError(loc, storage.SidecarKey(st.URL), err)
	}
	var out stored
	if err := json.Unmarshal(data, &out.doc); err != nil {
		return nil, fmt.Errorf("reading %s: %w", metaKey, err)
	}
	if withLog {
		out.log, err = readBounded(ctx, store, storage.LogKey(key), storage.MaxLogBytes)
		if err != nil {
			out.logErr = storeError(loc, storage.LogKey(st.URL), err)
		}
	}
	return &out, nil
}

// errTooLarge: a stored object is larger than CoreDog writes it.
var errTooLarge = errors.New("larger than CoreDog writes it")

// readBounded reads a whole small object, refusing one over limit bytes.
func readBounded(ctx context.Context, store storage.Store, key string, limit int64) ([]byte, error) {
	r, err := store.Read(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(storage.CtxReader{Ctx: ctx, R: r}, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes: %w", key, limit, errTooLarge)
	}
	return data, nil
}

// storedCommandLine reads the crashed process's command line from the
// metadata file stored next to cd's dump.
func (a *app) storedCommandLine(ctx context.Context, cd *coredogv1.CoreDump, storageURL string) (string, error) {
	s, err := a.storedSidecars(ctx, cd, storageURL, false)
	if err != nil {
		return "", err
	}
	return s.doc.Spec.Process.CommandLine, nil
}
