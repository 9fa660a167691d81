package nodeguard

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Limits are a node's disk limits for cores. A zero field means no limit.
type Limits struct {
	// MaxUsage is the number of bytes all tracked cores together may use.
	MaxUsage int64
	// MinFree is the number of bytes of the file system to keep free.
	MinFree int64
	// MinFreePercent is the percentage of the file system to keep free. When
	// both MinFree and MinFreePercent are set, the larger amount applies.
	MinFreePercent int
}

// keepFree is the number of bytes to keep free on a file system of total bytes.
func (l Limits) keepFree(total int64) int64 {
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

// LocalFile is a core file on the node that the agent has registered.
type LocalFile struct {
	// Name is the CoreDump's name, or any other unique key.
	Name string
	// Path is where the file is.
	Path string
	// Size is the file's size in bytes.
	Size int64
	// Uploaded is true once the file's CoreDump is Uploaded or Skipped: from
	// then on the file may be deleted to make room.
	Uploaded bool
	// Added is when the agent registered the file; the oldest go first.
	Added time.Time
}

// FSStat describes the file system that holds the core directory.
type FSStat struct {
	// Total is the file system's size in bytes.
	Total int64
	// Free is the number of bytes available to new files.
	Free int64
}

// Plan decides whether a new core of n bytes may stay on the node. files are
// the cores already tracked (not the new one); fs.Free is the free space as if
// the new file had not been written yet, so Plan subtracts n from it.
//
// When the new core fits only after deleting some uploaded cores, deleteFirst
// lists them, oldest first, and no more than needed; deleting them counts as
// freeing their Size. A file that is not Uploaded is never in deleteFirst. When
// even deleting every uploaded core is not enough, Plan refuses with nothing to
// delete, because deleting would not save the new core, and reason names the
// limit that is in the way.
func Plan(files []LocalFile, fs FSStat, limits Limits, n int64) (deleteFirst []LocalFile, admit bool, reason string) {
	var usage int64
	var candidates []LocalFile
	for _, f := range files {
		usage += max(f.Size, 0)
		if f.Uploaded {
			candidates = append(candidates, f)
		}
	}
	return plan(usage, candidates, fs, limits, n)
}

// plan is Plan for files that use usage bytes together, of which candidates
// are the Uploaded ones.
func plan(usage int64, candidates []LocalFile, fs FSStat, limits Limits, n int64) (deleteFirst []LocalFile, admit bool, reason string) {
	if n < 0 {
		return nil, false, fmt.Sprintf("invalid core size %d", n)
	}
	if limits.MaxUsage > 0 && n > limits.MaxUsage {
		return nil, false, fmt.Sprintf("the core alone (%s) is larger than maxNodeUsage (%s)",
			formatBytes(n), formatBytes(limits.MaxUsage))
	}
	var deletable int64
	for _, f := range candidates {
		deletable += max(f.Size, 0)
	}
	keep := limits.keepFree(fs.Total)

	overUsage := func(freed int64) bool {
		return limits.MaxUsage > 0 && usage-freed+n > limits.MaxUsage
	}
	underFree := func(freed int64) bool {
		return keep > 0 && fs.Free+freed-n < keep
	}

	if overUsage(deletable) || underFree(deletable) {
		return nil, false, refusal(usage-deletable+n, fs.Free+deletable-n, keep, limits, overUsage(deletable), underFree(deletable))
	}

	// Name breaks ties so that the plan does not depend on the order of files.
	slices.SortFunc(candidates, func(a, b LocalFile) int {
		return cmp.Or(a.Added.Compare(b.Added), cmp.Compare(a.Name, b.Name))
	})
	var freed int64
	for _, f := range candidates {
		if !overUsage(freed) && !underFree(freed) {
			break
		}
		deleteFirst = append(deleteFirst, f)
		freed += max(f.Size, 0)
	}
	return deleteFirst, true, ""
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
	return strings.Join(parts, "; ") + ", even after deleting every uploaded core"
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
