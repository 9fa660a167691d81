package controllers

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func TestConflicts(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	policy := func(name string, age int, dir string, sel map[string]string) coredogv1.CoreDumpPolicy {
		return coredogv1.CoreDumpPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute))},
			Spec:       coredogv1.CoreDumpPolicySpec{HostPath: dir, NodeSelector: sel},
		}
	}
	deleting := policy("old", 0, "/cores", nil)
	deleting.DeletionTimestamp = &metav1.Time{Time: t0}
	cases := []struct {
		name     string
		policies []coredogv1.CoreDumpPolicy
		want     map[string]string
	}{
		{"alone", []coredogv1.CoreDumpPolicy{policy("a", 0, "/cores", nil)}, map[string]string{}},
		{"same path, all nodes: newer loses", []coredogv1.CoreDumpPolicy{policy("new", 5, "/cores", nil), policy("old", 1, "/cores", nil)},
			map[string]string{"new": "old"}},
		{"same age: name breaks the tie", []coredogv1.CoreDumpPolicy{policy("b", 0, "/cores", nil), policy("a", 0, "/cores", nil)},
			map[string]string{"b": "a"}},
		{"different paths", []coredogv1.CoreDumpPolicy{policy("a", 0, "/cores", nil), policy("b", 1, "/other", nil)}, map[string]string{}},
		{"nested path", []coredogv1.CoreDumpPolicy{policy("a", 0, "/cores", nil), policy("b", 1, "/cores/team", nil)},
			map[string]string{"b": "a"}},
		{"prefix that is not a parent", []coredogv1.CoreDumpPolicy{policy("a", 0, "/cores", nil), policy("b", 1, "/cores2", nil)}, map[string]string{}},
		{"disjoint selectors", []coredogv1.CoreDumpPolicy{
			policy("a", 0, "/cores", map[string]string{"pool": "gpu"}), policy("b", 1, "/cores", map[string]string{"pool": "cpu"})}, map[string]string{}},
		{"compatible selectors", []coredogv1.CoreDumpPolicy{
			policy("a", 0, "/cores", map[string]string{"pool": "gpu"}), policy("b", 1, "/cores", map[string]string{"zone": "x"})},
			map[string]string{"b": "a"}},
		{"empty hostPath means the default", []coredogv1.CoreDumpPolicy{
			policy("a", 0, "", nil), policy("b", 1, coredogv1.DefaultHostPath, nil)}, map[string]string{"b": "a"}},
		{"a loser does not block a third", []coredogv1.CoreDumpPolicy{
			policy("a", 0, "/cores", map[string]string{"pool": "gpu"}),
			policy("b", 1, "/cores", nil),
			policy("c", 2, "/cores", map[string]string{"pool": "cpu"})},
			map[string]string{"b": "a"}},
		{"two policies that both set core_pattern", func() []coredogv1.CoreDumpPolicy {
			a, b := policy("a", 0, "/cores-a", nil), policy("b", 1, "/cores-b", nil)
			a.Spec.CorePattern, b.Spec.CorePattern = coredogv1.CorePatternManage, coredogv1.CorePatternPipe
			return []coredogv1.CoreDumpPolicy{a, b}
		}(), map[string]string{"b": "a"}},
		{"one sets core_pattern, the other observes", func() []coredogv1.CoreDumpPolicy {
			a, b := policy("a", 0, "/cores-a", nil), policy("b", 1, "/cores-b", nil)
			a.Spec.CorePattern = coredogv1.CorePatternPipe
			return []coredogv1.CoreDumpPolicy{a, b}
		}(), map[string]string{}},
		{"a deleting policy yields", []coredogv1.CoreDumpPolicy{deleting, policy("new", 3, "/cores", nil)}, map[string]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Conflicts(tc.policies); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Conflicts = %v, want %v", got, tc.want)
			}
		})
	}
}
