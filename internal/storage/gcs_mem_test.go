package storage

import (
	"bufio"
	"context"
	"net/url"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestGCSWriteFootprint measures what one large write to the fake GCS
// costs this process: anonymous resident memory (RssAnon, which binary
// pages are not part of), the Go heap, and the throughput. It only runs
// when COREDOG_STORAGE_MEASURE is set; docs/decisions.md has its figures.
func TestGCSWriteFootprint(t *testing.T) {
	if os.Getenv("COREDOG_STORAGE_MEASURE") == "" {
		t.Skip("set COREDOG_STORAGE_MEASURE=1 to measure")
	}
	endpoint := startFakeGCS(t)
	creds := secret(KeyGCSCredentials, serviceAccountJSON(t, "service_account", map[string]string{"token_uri": endpoint + gcsTokenPath}))
	ctx := context.Background()
	const size = 256 << 20
	for i := range 3 {
		s := mustOpen(t, mustParse(t, "gs://"+fakeGCSBucket+"?endpoint="+url.QueryEscape(endpoint)), creds)
		runtime.GC()
		before := sampleMemory()
		var (
			mu   sync.Mutex
			peak memSample
			stop = make(chan struct{})
			done = make(chan struct{})
		)
		go func() {
			defer close(done)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					m := sampleMemory()
					mu.Lock()
					peak = peak.max(m)
					mu.Unlock()
				}
			}
		}()
		start := time.Now()
		n, err := s.Write(ctx, "measure/core-"+strconv.Itoa(i)+".zst", newGenReader(size, byte(i)), WriteOptions{SizeHint: size})
		elapsed := time.Since(start)
		close(stop)
		<-done
		if err != nil || n != size {
			t.Fatalf("Write = %d, %v", n, err)
		}
		s.Close()
		t.Logf("write %d: %.0f MiB/s; RssAnon %d -> peak %d MiB; heap objects %d -> peak %d MiB; Go total %d -> peak %d MiB",
			i, float64(size)/(1<<20)/elapsed.Seconds(),
			before.rssAnon>>20, peak.rssAnon>>20, before.heap>>20, peak.heap>>20, before.total>>20, peak.total>>20)
	}
}

type memSample struct{ rssAnon, heap, total uint64 }

func (a memSample) max(b memSample) memSample {
	return memSample{max(a.rssAnon, b.rssAnon), max(a.heap, b.heap), max(a.total, b.total)}
}

func sampleMemory() memSample {
	ms := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}
	metrics.Read(ms)
	m := memSample{heap: ms[0].Value.Uint64(), total: ms[1].Value.Uint64()}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			m.rssAnon = kb << 10
		}
	}
	return m
}
