package nodeguard

import (
	"strings"
	"testing"
)

const (
	ki int64 = 1 << 10
	gi int64 = 1 << 30
)

func TestDecide(t *testing.T) {
	bigDisk := FSStat{Total: 1000 * gi, Free: 900 * gi}

	tests := []struct {
		name       string
		usage      int64
		fs         FSStat
		limits     Limits
		n          int64
		wantAdmit  bool
		wantReason string // substring; "" means the reason must be empty
	}{
		{
			name:      "under every limit",
			usage:     gi,
			fs:        FSStat{Total: 100 * gi, Free: 50 * gi},
			limits:    Limits{MaxUsage: 10 * gi, MinFree: gi, MinFreePercent: 5},
			n:         gi,
			wantAdmit: true,
		},
		{
			name:      "exactly at maxUsage is admitted",
			usage:     3 * gi,
			fs:        bigDisk,
			limits:    Limits{MaxUsage: 4 * gi},
			n:         gi,
			wantAdmit: true,
		},
		{
			name:       "over maxUsage is refused",
			usage:      4 * gi,
			fs:         bigDisk,
			limits:     Limits{MaxUsage: 4 * gi},
			n:          gi,
			wantReason: "cores on the node would use 5Gi, over maxNodeUsage (4Gi)",
		},
		{
			name:       "a core larger than maxUsage on its own is refused",
			usage:      gi,
			fs:         bigDisk,
			limits:     Limits{MaxUsage: 4 * gi},
			n:          4*gi + 1,
			wantReason: "larger than maxNodeUsage (4Gi)",
		},
		{
			name:      "minFree: enough free space",
			usage:     gi,
			fs:        FSStat{Total: 100 * gi, Free: 7 * gi},
			limits:    Limits{MinFree: 5 * gi},
			n:         2 * gi,
			wantAdmit: true,
		},
		{
			name:       "minFree: refused",
			usage:      3 * gi,
			fs:         FSStat{Total: 100 * gi, Free: 6 * gi},
			limits:     Limits{MinFree: 5 * gi},
			n:          2 * gi,
			wantReason: "free space would be 4Gi, under minNodeFree (5Gi)",
		},
		{
			name:       "minFreePercent: refused",
			fs:         FSStat{Total: 100 * gi, Free: 12 * gi},
			limits:     Limits{MinFreePercent: 10},
			n:          3 * gi,
			wantReason: "under minNodeFree (10% = 10Gi)",
		},
		{
			name:       "both free limits: the absolute one is stricter",
			fs:         FSStat{Total: 100 * gi, Free: 22 * gi},
			limits:     Limits{MinFree: 20 * gi, MinFreePercent: 10},
			n:          3 * gi,
			wantReason: "under minNodeFree (20Gi)",
		},
		{
			name:       "both free limits: the percentage is stricter",
			fs:         FSStat{Total: 100 * gi, Free: 12 * gi},
			limits:     Limits{MinFree: gi, MinFreePercent: 10},
			n:          3 * gi,
			wantReason: "under minNodeFree (10% = 10Gi)",
		},
		{
			name:       "both limits in the way are both named",
			usage:      4 * gi,
			fs:         FSStat{Total: 100 * gi, Free: 6 * gi},
			limits:     Limits{MaxUsage: 4 * gi, MinFree: 5 * gi},
			n:          2 * gi,
			wantReason: "over maxNodeUsage (4Gi); free space would be 4Gi, under minNodeFree (5Gi)",
		},
		{
			name:      "zero limits always admit",
			usage:     500 * gi,
			fs:        FSStat{Total: 100 * gi, Free: 0},
			n:         1000 * gi,
			wantAdmit: true,
		},
		{
			name:       "a negative size is refused",
			n:          -1,
			wantReason: "invalid core size",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			admit, reason := decide(tt.usage, tt.fs, tt.limits, tt.n)
			if admit != tt.wantAdmit {
				t.Errorf("admit = %v, want %v (reason %q)", admit, tt.wantAdmit, reason)
			}
			if tt.wantReason == "" && reason != "" {
				t.Errorf("reason = %q, want none", reason)
			}
			if !strings.Contains(reason, tt.wantReason) {
				t.Errorf("reason = %q, want it to contain %q", reason, tt.wantReason)
			}
		})
	}
}

func TestParseMinFree(t *testing.T) {
	tests := []struct {
		in          string
		wantBytes   int64
		wantPercent int
		wantErr     bool
	}{
		{in: "5%", wantPercent: 5},
		{in: "0%", wantPercent: 0},
		{in: "99%", wantPercent: 99},
		{in: " 15% ", wantPercent: 15},
		{in: "100%", wantErr: true},
		{in: "-1%", wantErr: true},
		{in: "5.5%", wantErr: true},
		{in: "%", wantErr: true},
		{in: "2Gi", wantBytes: 2 * gi},
		{in: "500Mi", wantBytes: 500 << 20},
		{in: "1G", wantBytes: 1_000_000_000},
		{in: "0", wantBytes: 0},
		{in: "1.5Ki", wantBytes: 1536},
		{in: "-1Gi", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "", wantErr: true},
		{in: "100E", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			b, p, err := ParseMinFree(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseMinFree(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if b != tt.wantBytes || p != tt.wantPercent {
				t.Errorf("ParseMinFree(%q) = %d, %d%%; want %d, %d%%", tt.in, b, p, tt.wantBytes, tt.wantPercent)
			}
		})
	}
}

func FuzzParseMinFree(f *testing.F) {
	for _, s := range []string{"5%", "100%", "2Gi", "-1Gi", "1e3", "0.5", "9223372036854775807", "abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, p, err := ParseMinFree(s)
		if err != nil {
			return
		}
		if b < 0 || p < 0 || p > 99 || (b != 0 && p != 0) {
			t.Errorf("ParseMinFree(%q) = %d, %d", s, b, p)
		}
	})
}

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0B"},
		{1023, "1023B"},
		{ki, "1Ki"},
		{1536, "1.5Ki"},
		{5 * gi, "5Gi"},
		{1<<63 - 1, "8Ei"},
	}
	for _, tt := range tests {
		if got := formatBytes(tt.in); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
