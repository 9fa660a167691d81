package upload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/storage"
)

// TestDeleteStoredOnlyOwnObjects stores a dump's two objects as this
// version, earlier versions and a forger would have left them, in file://
// stores with and without attributes, and deletes the dump: only objects
// that record its identity (its UID; for earlier objects its name and node,
// or the UID inside its metadata document) go.
func TestDeleteStoredOnlyOwnObjects(t *testing.T) {
	const key = "team-a/web-0/20260101T000000Z-server-SIGSEGV/core-victim.zst"
	cd := &coredogv1.CoreDump{
		ObjectMeta: metav1.ObjectMeta{Name: "core-victim", Namespace: "coredog-system", UID: types.UID("uid-victim")},
		Spec:       coredogv1.CoreDumpSpec{NodeName: "node-1", PolicyName: "p"},
	}
	doc := func(uid string) string { return fmt.Sprintf(`{"metadata":{"name":"core-victim","uid":%q}}`, uid) }
	own := map[string]string{storage.MetadataCoreDump: "core-victim", storage.MetadataNode: "node-1", storage.MetadataCoreDumpUID: "uid-victim"}
	legacy := map[string]string{storage.MetadataCoreDump: "core-victim", storage.MetadataNode: "node-1"}
	forged := map[string]string{storage.MetadataCoreDump: "forged", storage.MetadataNode: "node-1", storage.MetadataCoreDumpUID: "uid-forged"}
	cases := []struct {
		name                string
		query               string
		dumpMD, docMD       map[string]string
		docBody             string
		wantDump, wantDoc   bool // still there afterwards
		wantNotOwned, empty bool
	}{
		{name: "this version's own objects", dumpMD: own, docMD: own, docBody: doc("uid-victim")},
		{name: "an earlier version's: name and node, a document without metadata", dumpMD: legacy, docBody: doc("uid-victim")},
		{name: "another dump's", dumpMD: forged, docMD: forged, docBody: doc("uid-forged"), wantDump: true, wantDoc: true, wantNotOwned: true},
		{name: "another dump's of an earlier version", dumpMD: map[string]string{storage.MetadataCoreDump: "forged", storage.MetadataNode: "node-1"},
			docBody: doc("uid-forged"), wantDump: true, wantDoc: true, wantNotOwned: true},
		{name: "same name, another UID (a recreated CoreDump)", dumpMD: map[string]string{storage.MetadataCoreDump: "core-victim", storage.MetadataCoreDumpUID: "uid-old"},
			docBody: doc("uid-old"), wantDump: true, wantDoc: true, wantNotOwned: true},
		{name: "metadata=skip, own document", query: "?metadata=skip", docBody: doc("uid-victim")},
		{name: "metadata=skip, another's document", query: "?metadata=skip", docBody: doc("uid-forged"), wantDump: true, wantDoc: true, wantNotOwned: true},
		{name: "no identity at all", query: "?metadata=skip", docBody: `{"kind":"something else"}`, wantDump: true, wantDoc: true, wantNotOwned: true},
		{name: "nothing stored", empty: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			url := "file://" + dir + tc.query
			loc, err := storage.ParseURL(url)
			if err != nil {
				t.Fatal(err)
			}
			s, err := storage.Open(ctx, loc, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.empty {
				if _, err := s.Write(ctx, key, strings.NewReader("dump"), storage.WriteOptions{Metadata: tc.dumpMD}); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Write(ctx, storage.SidecarKey(key), strings.NewReader(tc.docBody), storage.WriteOptions{Metadata: tc.docMD}); err != nil {
					t.Fatal(err)
				}
			}
			st := *cd
			st.Status.Storage = &coredogv1.StorageStatus{URL: loc.ObjectURL(key), Key: key}
			p := &coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: coredogv1.CoreDumpPolicySpec{Storage: coredogv1.StorageSpec{URL: url}}}
			u := &Uploader{OpenStore: storage.Open}
			err = u.DeleteStored(ctx, &st, p)
			if got := errors.Is(err, ErrNotOwned); got != tc.wantNotOwned {
				t.Fatalf("DeleteStored: %v; want ErrNotOwned %v", err, tc.wantNotOwned)
			}
			if err != nil && !tc.wantNotOwned {
				t.Fatal(err)
			}
			for path, want := range map[string]bool{key: tc.wantDump, storage.SidecarKey(key): tc.wantDoc} {
				_, err := os.Stat(filepath.Join(dir, path))
				if got := err == nil; got != want {
					t.Errorf("%s still there: %v, want %v", path, got, want)
				}
			}
		})
	}
}
