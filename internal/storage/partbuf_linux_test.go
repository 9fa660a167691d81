package storage

import (
	"testing"
	"unsafe"
)

func TestPartClass(t *testing.T) {
	for _, tc := range []struct{ size, want int }{
		{1, 1 << 20},
		{s3SmallRead, 1 << 20},
		{s3SmallRead + 1, minPartSize},
		{minPartSize, minPartSize},
		{minPartSize + 1, 8 << 20},
		{6 << 20, 8 << 20},
		{8 << 20, 8 << 20},
		{12 << 20, 16 << 20},
		{2726 << 20, 4096 << 20},
	} {
		if got := partClass(tc.size); got != tc.want {
			t.Errorf("partClass(%d) = %d, want %d", tc.size, got, tc.want)
		}
	}
}

// TestPartBuffersAreReusedAndFreed: a returned buffer's mapping serves the
// next request of its class, with its pages given back (they read as
// zeros), and what is held is counted.
func TestPartBuffersAreReusedAndFreed(t *testing.T) {
	held := partsHeld.now
	a := getPart(6 << 20)
	if len(*a) != 6<<20 || cap(*a) != 8<<20 {
		t.Fatalf("len %d cap %d, want 6 MiB in an 8 MiB mapping", len(*a), cap(*a))
	}
	for i := range *a {
		(*a)[i] = 0xff
	}
	if partsHeld.now != held+6<<20 {
		t.Errorf("held %d, want %d more", partsHeld.now-held, 6<<20)
	}
	base := unsafe.SliceData(*a)
	putPart(a)
	b := getPart(7 << 20)
	defer putPart(b)
	if unsafe.SliceData(*b) != base {
		t.Error("a buffer of the same class did not reuse the returned mapping")
	}
	for i, v := range *b {
		if v != 0 {
			t.Fatalf("byte %d of a reused buffer is %#x: its pages were not given back", i, v)
		}
	}
	if partsHeld.now != held+7<<20 {
		t.Errorf("held %d, want %d more", partsHeld.now-held, 7<<20)
	}
}
