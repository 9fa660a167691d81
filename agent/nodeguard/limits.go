package nodeguard

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Limits are a node's disk limits for cores. A zero field means no limit.
type Limits struct {
	// MaxUsage is the number of bytes all admitted cores together may use.
	MaxUsage int64
	// MinFree is the number of bytes of the file system to keep free.
	MinFree int64
	// MinFreePercent is the percentage of the file system to keep free. When
	// both MinFree and MinFreePercent are set, the larger amount applies.
	MinFreePercent int
}

// KeepFree is the number of bytes to keep free on a file system of total bytes.
func (l Limits) KeepFree(total int64) int64 {
	keep := max(l.MinFree, 0)
	if l.MinFreePercent > 0 && total > 0 {
		// Split to stay clear of overflow on very large file systems.
		pct := int64(l.MinFreePercent)
		keep = max(keep, total/100*pct+total%100*pct/100)
	}
	return keep
}

// needsFS reports whether the free-space limits need the file system measured.
func (l Limits) needsFS() bool {
	return l.MinFree > 0 || l.MinFreePercent > 0
}

// plainQuantity is a quantity with a suffix or a decimal exponent of at most
// two digits.
var plainQuantity = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?([KMGTPE]i|[mkMGTPE]|[eE][+-]?[0-9]{1,2})?$`)

// ParseMinFree parses a minNodeFree value: a whole percentage of the file
// system from "0%" to "99%", or a non-negative quantity such as "2Gi". It
// returns the value in the matching field and zero in the other, ready for
// Limits.MinFree and Limits.MinFreePercent.
func ParseMinFree(s string) (bytes int64, percent int, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, 0, errors.New("min free: empty value, want a percentage such as 5% or a quantity such as 2Gi")
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.Atoi(p)
		// 100% would refuse every core on every node; that is a typo, not a policy.
		if err != nil || v < 0 || v > 99 {
			return 0, 0, fmt.Errorf("min free %q: a percentage must be a whole number from 0%% to 99%%", s)
		}
		return 0, v, nil
	}
	// resource.ParseQuantity takes time and memory that grow with the value
	// of a decimal exponent ("1E-10000000" takes seconds, "0E1000000000000000000"
	// never ends), so only plain sizes reach it.
	if !plainQuantity.MatchString(s) {
		return 0, 0, fmt.Errorf("min free %q: not a percentage or a size such as 2Gi, 500M or 1e9", s)
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, 0, fmt.Errorf("min free %q: not a percentage or a quantity: %w", s, err)
	}
	if q.Sign() < 0 {
		return 0, 0, fmt.Errorf("min free %q: must not be negative", s)
	}
	if q.AsApproximateFloat64() >= math.MaxInt64 {
		return 0, 0, fmt.Errorf("min free %q: too large", s)
	}
	// Value rounds a fractional byte count up, which errs towards keeping more free.
	return q.Value(), 0, nil
}

// FSStat describes the file system that holds the core directory.
type FSStat struct {
	// Total is the file system's size in bytes.
	Total int64
	// Free is the number of bytes available to new files.
	Free int64
}

// decide reports whether a new core of n bytes may stay on the node, where
// the cores already kept use usage bytes together. fs.Free is the free space
// as if the new file had not been written yet, so decide subtracts n from it.
// A refusal's reason names the limit that is in the way.
func decide(usage int64, fs FSStat, limits Limits, n int64) (admit bool, reason string) {
	if n < 0 {
		return false, fmt.Sprintf("invalid core size %d", n)
	}
	if limits.MaxUsage > 0 && n > limits.MaxUsage {
		return false, fmt.Sprintf("the core alone (%s) is larger than maxNodeUsage (%s)",
			formatBytes(n), formatBytes(limits.MaxUsage))
	}
	keep := limits.KeepFree(fs.Total)
	overUsage := limits.MaxUsage > 0 && usage+n > limits.MaxUsage
	underFree := keep > 0 && fs.Free-n < keep
	if overUsage || underFree {
		return false, refusal(usage+n, fs.Free-n, keep, limits, overUsage, underFree)
	}
	return true, ""
}

// refusal says which limit stands in the way, in the policy's own field names
// so that whoever reads the CoreDump knows what to change.
func refusal(usage, free, keep int64, limits Limits, overUsage, underFree bool) string {
	var parts []string
	if overUsage {
		parts = append(parts, fmt.Sprintf("cores on the node would use %s, over maxNodeUsage (%s)",
			formatBytes(usage), formatBytes(limits.MaxUsage)))
	}
	if underFree {
		parts = append(parts, fmt.Sprintf("free space would be %s, under minNodeFree (%s)",
			formatBytes(max(free, 0)), describeKeep(keep, limits)))
	}
	return strings.Join(parts, "; ")
}

func describeKeep(keep int64, limits Limits) string {
	if limits.MinFreePercent > 0 && keep > limits.MinFree {
		return fmt.Sprintf("%d%% = %s", limits.MinFreePercent, formatBytes(keep))
	}
	return formatBytes(keep)
}

// formatBytes renders a size for people: exact below 1Ki, else one decimal in
// binary units, the same units the policy is written in.
func formatBytes(b int64) string {
	const units = "KMGTPE"
	if b < 1024 {
		return strconv.FormatInt(b, 10) + "B"
	}
	v := float64(b)
	i := -1
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + string(units[i]) + "i"
}
