package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/storage"
)

// maxStoredMetadata bounds what is read of a dump's <key>.json: the
// manager writes a few KiB; the bucket is not trusted to stop.
const maxStoredMetadata = 1 << 20

// storedMetadataTimeout bounds the read, so that describe and debug, which
// show the API's view without storage, never hang on a store.
const storedMetadataTimeout = 15 * time.Second

// storedCommandLine reads the crashed process's command line from the
// metadata file stored next to cd's dump, with the caller's own storage
// credentials (as download does): the CoreDump object does not hold it.
// storageURL overrides the policy's bucket URL, as --storage-url does.
func (a *app) storedCommandLine(ctx context.Context, cd *coredogv1.CoreDump, storageURL string) (string, error) {
	st, err := storedObject(cd)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, storedMetadataTimeout)
	defer cancel()
	store, loc, key, err := a.openDumpStore(ctx, cd, st, storageURL)
	if err != nil {
		return "", err
	}
	defer store.Close()
	metaKey := storage.SidecarKey(key)
	r, err := store.Read(ctx, metaKey)
	if err != nil {
		return "", storeError(loc, storage.SidecarKey(st.URL), err)
	}
	defer r.Close()
	var doc struct {
		Spec coredogv1.StoredCoreDumpSpec `json:"spec"`
	}
	data, err := io.ReadAll(io.LimitReader(storage.CtxReader{Ctx: ctx, R: r}, maxStoredMetadata+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", metaKey, err)
	}
	if len(data) > maxStoredMetadata {
		return "", fmt.Errorf("%s is over %d bytes: not a metadata file CoreDog wrote", metaKey, maxStoredMetadata)
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("reading %s: %w", metaKey, err)
	}
	return doc.Spec.Process.CommandLine, nil
}
