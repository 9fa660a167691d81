//go:build linux

package nodeguard

import "testing"

func TestStatfs(t *testing.T) {
	st, err := Statfs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if st.Total <= 0 || st.Free < 0 || st.Free > st.Total {
		t.Errorf("Statfs = %+v, want 0 <= Free <= Total and Total > 0", st)
	}
	if _, err := Statfs("/nonexistent/coredog"); err == nil {
		t.Errorf("Statfs of a missing directory succeeded")
	}
}
