package analyze

import (
	"bytes"
	"os"
	"testing"
)

type bytesModule struct{ *bytes.Reader }

func (bytesModule) Close() error { return nil }

// FuzzModule feeds hostile module files to what reads them once their
// build-id matched: debug/elf behind precheckELF, .eh_frame_hdr lookups,
// delve's CFI parser and interpreter, symbol tables, DWARF lines and Go's
// pclntab. None may panic, and each lookup is bounded.
func FuzzModule(f *testing.F) {
	for _, p := range []string{"/usr/bin/true", "/bin/true"} {
		if b, err := os.ReadFile(p); err == nil && len(b) < 1<<20 {
			f.Add(b, uint64(0x1000))
			break
		}
	}
	f.Add([]byte("\x7fELF\x02\x01\x01"), uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, pc uint64) {
		mf := bytesModule{bytes.NewReader(data)}
		if precheckELF(mf) != nil {
			return
		}
		ef, err := safeNewFile(mf)
		if err != nil {
			return
		}
		m := &module{f: mf, ef: ef, order: ef.ByteOrder}
		_ = fileBuildID(ef)
		for _, addr := range []uint64{pc, ef.Entry, pc + 1} {
			if fde, err := m.fde(addr); err == nil && fde != nil {
				_, _ = establish(fde, addr)
			}
			_, _, _ = m.symbolize(addr)
			var code [9]byte
			_ = m.readCode(addr, code[:])
			_, _ = m.bias(addr, pc)
		}
	})
}
