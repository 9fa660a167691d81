package corefile

import (
	"bytes"
	"os"
	"testing"
)

func BenchmarkReadCoreReal(b *testing.B) {
	data, err := os.ReadFile(cCore(b).core)
	if err != nil {
		b.Fatal(err)
	}
	r := bytes.NewReader(data)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadCore(r, int64(len(data))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseDefault(b *testing.B) {
	p, err := ParsePattern("core.%h.%e.%P.%s.%t")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := p.Parse("core.web-0.svc.python3.11.4242.6.1700000000"); !ok {
			b.Fatal("no match")
		}
	}
}
