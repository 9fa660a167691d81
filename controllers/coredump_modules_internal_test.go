package controllers

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/storage"
)

func dumpWith(uid, url, key string, deleting bool, mods ...coredogv1.CrashModule) coredogv1.CoreDump {
	cd := coredogv1.CoreDump{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid)}}
	if deleting {
		now := metav1.Now()
		cd.DeletionTimestamp = &now
	}
	if url != "" {
		cd.Status.Storage = &coredogv1.StorageStatus{URL: url, Key: key}
	}
	if mods != nil {
		cd.Status.Analysis = &coredogv1.CrashAnalysis{Outcome: coredogv1.AnalysisPartial, Modules: mods}
	}
	return cd
}

func TestUnreferenced(t *testing.T) {
	const a, b = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
	loc, err := storage.ParseURL("s3://bucket/dumps")
	if err != nil {
		t.Fatal(err)
	}
	here, hereKey := "s3://bucket/dumps/ns/pod/x.core.zst", "dumps/ns/pod/x.core.zst"
	there, thereKey := "s3://other/ns/pod/x.core.zst", "ns/pod/x.core.zst"
	stored := func(id string) coredogv1.CrashModule {
		return coredogv1.CrashModule{Path: "/m", BuildID: id, State: coredogv1.ModuleStored}
	}
	missing := func(id string) coredogv1.CrashModule {
		return coredogv1.CrashModule{Path: "/m", BuildID: id, State: coredogv1.ModuleMissing}
	}
	gone := dumpWith("gone", here, hereKey, true, stored(a), stored(b))
	for _, tc := range []struct {
		name   string
		others []coredogv1.CoreDump
		want   []string
	}{
		{"no other dump", nil, []string{a, b}},
		{"the dump itself", []coredogv1.CoreDump{gone}, []string{a, b}},
		{"another dump holds one", []coredogv1.CoreDump{dumpWith("o", here, hereKey, false, stored(a))}, []string{b}},
		{"another dump lists it Missing", []coredogv1.CoreDump{dumpWith("o", here, hereKey, false, missing(a))}, []string{a, b}},
		{"another location", []coredogv1.CoreDump{dumpWith("o", there, thereKey, false, stored(a))}, []string{a, b}},
		{"another dump being deleted", []coredogv1.CoreDump{dumpWith("o", here, hereKey, true, stored(a))}, []string{a, b}},
		{"another dump not stored", []coredogv1.CoreDump{dumpWith("o", "", "", false, stored(a))}, []string{a, b}},
		{"both held", []coredogv1.CoreDump{dumpWith("o", here, hereKey, false, stored(a)), dumpWith("p", here, hereKey, false, stored(b))}, nil},
	} {
		got := unreferenced(storedBuildIDs(&gone), &gone, tc.others, loc)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: unreferenced = %v, want %v", tc.name, got, tc.want)
		}
	}
}
