package corefile

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const (
	// maxPatternLen mirrors the kernel: core_pattern is a CORENAME_MAX_SIZE (128) buffer
	// including the terminating NUL, so anything longer cannot be what the kernel uses.
	maxPatternLen = 127
	// maxNameLen is NAME_MAX: the kernel cannot create a longer file name, so a longer
	// string cannot be a core file name and is not worth the matcher's time.
	maxNameLen = 255
	// maxCommLen is TASK_COMM_LEN-1: %e is the task's comm, which the kernel truncates
	// to 15 bytes. Used only as a preference, so a future kernel with longer names
	// still parses.
	maxCommLen = 15
	// maxPID is PID_MAX_LIMIT on 64-bit kernels; a larger number cannot be a PID or TID.
	maxPID = 1 << 22
	// maxSignal is _NSIG on Linux.
	maxSignal = 64
	// maxBacktrackSteps bounds the matcher used for patterns that repeat a specifier.
	maxBacktrackSteps = 1 << 16
)

// token is one element of a compiled pattern: literal text when spec is 0, otherwise
// the specifier letter.
type token struct {
	spec byte
	lit  string
}

// Pattern is a compiled core_pattern file-name pattern such as "core.%h.%e.%P.%s.%t".
// A Pattern is immutable and safe for concurrent use.
type Pattern struct {
	src     string
	tokens  []token
	has     [256]bool
	repeats bool // some specifier appears more than once
}

// ErrInvalidPattern is wrapped by every error ParsePattern returns.
var ErrInvalidPattern = errors.New("invalid core pattern")

// ParsePattern compiles a core_pattern file-name pattern. It accepts the specifiers
// %e %p %P %h %s %t %u %g %i %I %d %% and literal text. An unknown specifier, a trailing
// lone %, a '/', a leading '|' (a pipe handler, which writes no file), an empty
// pattern or one longer than 127 bytes is an error that names the problem.
func ParsePattern(pattern string) (*Pattern, error) {
	switch {
	case pattern == "":
		return nil, fmt.Errorf("%w: empty pattern", ErrInvalidPattern)
	case len(pattern) > maxPatternLen:
		return nil, fmt.Errorf("%w: %d bytes, the kernel keeps at most %d", ErrInvalidPattern, len(pattern), maxPatternLen)
	case pattern[0] == '|':
		return nil, fmt.Errorf("%w: %q pipes cores to a program, it names no file", ErrInvalidPattern, pattern)
	}
	p := &Pattern{src: pattern}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			p.tokens = append(p.tokens, token{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		if c == '/' {
			return nil, fmt.Errorf("%w: '/' at byte %d: the pattern must be a file name, the directory is configured separately", ErrInvalidPattern, i)
		}
		if c != '%' {
			lit.WriteByte(c)
			continue
		}
		if i+1 == len(pattern) {
			return nil, fmt.Errorf("%w: trailing lone '%%'", ErrInvalidPattern)
		}
		i++
		s := pattern[i]
		switch s {
		case '%':
			lit.WriteByte('%')
		case 'e', 'p', 'P', 'h', 's', 't', 'u', 'g', 'i', 'I', 'd':
			flush()
			if p.has[s] {
				p.repeats = true
			}
			p.has[s] = true
			p.tokens = append(p.tokens, token{spec: s})
		default:
			return nil, fmt.Errorf("%w: unsupported specifier %q at byte %d", ErrInvalidPattern, "%"+string([]byte{s}), i-1)
		}
	}
	flush()
	return p, nil
}

// HasHostPID reports whether the pattern contains %P, the PID in the initial PID
// namespace, which the agent needs to find the process in /proc.
func (p *Pattern) HasHostPID() bool { return p.has['P'] }

// String returns the pattern as given to ParsePattern.
func (p *Pattern) String() string { return p.src }

// NameFields is what a core file name says about the crash. A field whose specifier is
// not in the pattern is left zero (or nil).
type NameFields struct {
	Executable   string    // %e: the task's comm (up to 15 bytes, may contain dots and spaces; the kernel writes '/' as '!')
	PID          int64     // %p: PID in the crashing process's PID namespace
	HostPID      int64     // %P: PID in the initial PID namespace
	Hostname     string    // %h: nodename of the crashing process's UTS namespace ('/' written as '!')
	Signal       int       // %s
	Time         time.Time // %t: dump time, whole seconds, UTC
	UID, GID     *int64    // %u %g: real UID and GID in the initial user namespace
	TID, HostTID int64     // %i %I: crashing thread, in its own and in the initial PID namespace
	DumpMode     int       // %d: 1 (an ordinary dump) or 2 (dumped as root under fs.suid_dumpable=2); 0 when unknown
}

// isText reports whether specifier s matches free text rather than digits.
func isText(s byte) bool { return s == 'e' || s == 'h' }

// numberValid reports whether digits are a value the kernel could have written for
// specifier s: decimal without leading zeros (it prints with %d) and within range.
func numberValid(s byte, digits string) (int64, bool) {
	if digits == "" || len(digits) > 19 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, false
	}
	switch s {
	case 'p', 'P', 'i', 'I':
		return v, v >= 1 && v <= maxPID
	case 's':
		return v, v >= 1 && v <= maxSignal
	case 'u', 'g':
		return v, v <= 1<<32-1
	case 'd':
		// The kernel dumps only with dumpable 1 or 2 (SUID_DUMP_USER, SUID_DUMP_ROOT).
		return v, v >= 1 && v <= 2
	}
	return v, true // 't'
}

// score ranks alternative parses of an ambiguous name; lower is better, compared field
// by field. The text fields %e and %h may contain the literal separators ("python3.11",
// "web-0.svc"), so one name can split several ways and no rule is right every time.
// The kernel's comm limit decides first; then we avoid cutting a suffix off the name
// it belongs to: a version (".11") or a file extension (".py", the comm of a script
// run through its #! line); then, since hostnames carry dots (FQDNs, "web-0.svc") more
// often than executables do, the hostname takes what is left. So "web-0.my.app" reads
// as host "web-0.my", executable "app".
type score struct {
	longComm    int // %e values longer than the kernel's comm limit
	suffixSplit int // text fields that start right after a '.' and look like a suffix
	negHostLen  int // minus the total length of %h values
}

func (a score) add(b score) score {
	return score{a.longComm + b.longComm, a.suffixSplit + b.suffixSplit, a.negHostLen + b.negHostLen}
}

func (a score) less(b score) bool {
	if a.longComm != b.longComm {
		return a.longComm < b.longComm
	}
	if a.suffixSplit != b.suffixSplit {
		return a.suffixSplit < b.suffixSplit
	}
	return a.negHostLen < b.negHostLen
}

// fileExtensions are suffixes that end an executable's or script's name, never a
// host's; only an exact match counts, so the set can stay small.
var fileExtensions = map[string]bool{
	"py": true, "sh": true, "js": true, "mjs": true, "pl": true, "rb": true, "php": true,
	"lua": true, "bin": true, "exe": true, "out": true, "so": true, "jar": true, "run": true,
}

// textScore is the score contribution of text field s holding name[start:end].
func textScore(s byte, name string, start, end int) score {
	var sc score
	v := name[start:end]
	if s == 'e' && len(v) > maxCommLen {
		sc.longComm = 1
	}
	if start > 0 && name[start-1] == '.' && (v[0] >= '0' && v[0] <= '9' || fileExtensions[v]) {
		sc.suffixSplit = 1
	}
	if s == 'h' {
		sc.negHostLen = -len(v)
	}
	return sc
}

// Parse matches a file name against the pattern. ok is false when the name does not
// match; fields are filled only when the whole name matches. Numeric specifiers match
// only digits that form a valid value; %e and %h match non-empty text. When a name
// splits several ways, see score for the preference.
func (p *Pattern) Parse(name string) (NameFields, bool) {
	// A file name holds neither '/' nor NUL, and the kernel escapes '/' in %e and %h,
	// so with both rejected here any non-empty run of bytes is a valid text field.
	if name == "" || len(name) > maxNameLen || strings.ContainsAny(name, "/\x00") {
		return NameFields{}, false
	}
	var ends []int
	var ok bool
	if p.repeats {
		ends, ok, _ = p.matchBacktrack(name)
	} else {
		ends, ok = p.matchDP(name)
	}
	if !ok {
		return NameFields{}, false
	}
	return p.fields(name, ends), true
}

// matchDP finds the best parse when every specifier appears at most once, so the
// choice for one token never constrains another and the best parse of each suffix can
// be memoized: O(tokens × len(name)²) at worst, about 8M steps for hostile input.
// It returns, for each token, the end offset of its match in name.
func (p *Pattern) matchDP(name string) ([]int, bool) {
	n, nt := len(name), len(p.tokens)
	type cell struct {
		done, ok bool
		sc       score
		end      int // end of token i's match when starting at pos
	}
	memo := make([]cell, (nt+1)*(n+1))
	var solve func(i, pos int) (score, bool)
	solve = func(i, pos int) (score, bool) {
		if i == nt {
			return score{}, pos == n
		}
		c := &memo[i*(n+1)+pos]
		if c.done {
			return c.sc, c.ok
		}
		c.done = true
		t := p.tokens[i]
		switch {
		case t.spec == 0:
			if strings.HasPrefix(name[pos:], t.lit) {
				if sc, ok := solve(i+1, pos+len(t.lit)); ok {
					c.ok, c.sc, c.end = true, sc, pos+len(t.lit)
				}
			}
		case isText(t.spec):
			// Longest first, replacing only on a strictly better score, so ties go to
			// the earliest field taking the most.
			for end := n; end > pos; end-- {
				sc, ok := solve(i+1, end)
				if !ok {
					continue
				}
				sc = sc.add(textScore(t.spec, name, pos, end))
				if !c.ok || sc.less(c.sc) {
					c.ok, c.sc, c.end = true, sc, end
				}
			}
		default:
			digits := 0
			for pos+digits < n && digits < 20 && name[pos+digits] >= '0' && name[pos+digits] <= '9' {
				digits++
			}
			for end := pos + digits; end > pos; end-- {
				if _, valid := numberValid(t.spec, name[pos:end]); !valid {
					continue
				}
				if sc, ok := solve(i+1, end); ok && (!c.ok || sc.less(c.sc)) {
					c.ok, c.sc, c.end = true, sc, end
				}
			}
		}
		return c.sc, c.ok
	}
	if _, ok := solve(0, 0); !ok {
		return nil, false
	}
	ends := make([]int, nt)
	pos := 0
	for i := range nt {
		pos = memo[i*(n+1)+pos].end
		ends[i] = pos
	}
	return ends, true
}

// matchBacktrack finds the best parse for patterns that repeat a specifier: the kernel
// writes the same value at every occurrence, so a later occurrence must equal the
// first, which memoization by position cannot express. Repeats are rare and the search
// is bounded by maxBacktrackSteps; when the budget runs out the best parse found so far
// (if any) is used.
// complete is false when the budget ran out.
func (p *Pattern) matchBacktrack(name string) (ends []int, ok, complete bool) {
	n, nt := len(name), len(p.tokens)
	cur := make([]int, nt)
	var best []int
	var bestSc score
	var bound [256]string
	var isBound [256]bool
	steps := 0
	var walk func(i, pos int, sc score)
	walk = func(i, pos int, sc score) {
		steps++
		if steps > maxBacktrackSteps {
			return
		}
		if i == nt {
			if pos == n && (best == nil || sc.less(bestSc)) {
				best, bestSc = append(best[:0], cur...), sc
			}
			return
		}
		t := p.tokens[i]
		try := func(end int, add score) {
			cur[i] = end
			if t.spec != 0 && !isBound[t.spec] {
				isBound[t.spec], bound[t.spec] = true, name[pos:end]
				walk(i+1, end, sc.add(add))
				isBound[t.spec] = false
				return
			}
			walk(i+1, end, sc.add(add))
		}
		switch {
		case t.spec == 0:
			if strings.HasPrefix(name[pos:], t.lit) {
				try(pos+len(t.lit), score{})
			}
		case isBound[t.spec]:
			if v := bound[t.spec]; strings.HasPrefix(name[pos:], v) {
				try(pos+len(v), score{})
			}
		case isText(t.spec):
			for end := n; end > pos; end-- {
				try(end, textScore(t.spec, name, pos, end))
			}
		default:
			digits := 0
			for pos+digits < n && digits < 20 && name[pos+digits] >= '0' && name[pos+digits] <= '9' {
				digits++
			}
			for end := pos + digits; end > pos; end-- {
				if _, valid := numberValid(t.spec, name[pos:end]); valid {
					try(end, score{})
				}
			}
		}
	}
	walk(0, 0, score{})
	return best, best != nil, steps <= maxBacktrackSteps
}

// fields converts a match (the end offset of each token) into NameFields.
func (p *Pattern) fields(name string, ends []int) NameFields {
	var f NameFields
	pos := 0
	for i, t := range p.tokens {
		v := name[pos:ends[i]]
		pos = ends[i]
		if t.spec == 0 {
			continue
		}
		num, _ := numberValid(t.spec, v)
		switch t.spec {
		case 'e':
			f.Executable = v
		case 'h':
			f.Hostname = v
		case 'p':
			f.PID = num
		case 'P':
			f.HostPID = num
		case 's':
			f.Signal = int(num)
		case 't':
			f.Time = time.Unix(num, 0).UTC()
		case 'u':
			f.UID = &num
		case 'g':
			f.GID = &num
		case 'i':
			f.TID = num
		case 'I':
			f.HostTID = num
		case 'd':
			f.DumpMode = int(num)
		}
	}
	return f
}

// Render produces the name the kernel would write for f. Like the kernel it writes '/'
// in %e and %h as '!'. A nil UID or GID and a zero Time render as 0.
func (p *Pattern) Render(f NameFields) string {
	var b strings.Builder
	ptr := func(v *int64) int64 {
		if v == nil {
			return 0
		}
		return *v
	}
	for _, t := range p.tokens {
		switch t.spec {
		case 0:
			b.WriteString(t.lit)
		case 'e':
			b.WriteString(strings.ReplaceAll(f.Executable, "/", "!"))
		case 'h':
			b.WriteString(strings.ReplaceAll(f.Hostname, "/", "!"))
		case 'p':
			b.WriteString(strconv.FormatInt(f.PID, 10))
		case 'P':
			b.WriteString(strconv.FormatInt(f.HostPID, 10))
		case 's':
			b.WriteString(strconv.Itoa(f.Signal))
		case 't':
			var sec int64
			if !f.Time.IsZero() {
				sec = f.Time.Unix()
			}
			b.WriteString(strconv.FormatInt(sec, 10))
		case 'u':
			b.WriteString(strconv.FormatInt(ptr(f.UID), 10))
		case 'g':
			b.WriteString(strconv.FormatInt(ptr(f.GID), 10))
		case 'i':
			b.WriteString(strconv.FormatInt(f.TID, 10))
		case 'I':
			b.WriteString(strconv.FormatInt(f.HostTID, 10))
		case 'd':
			b.WriteString(strconv.Itoa(f.DumpMode))
		}
	}
	return b.String()
}
