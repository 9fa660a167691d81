package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Filter selects CoreDumps by what the list flags say. The zero Filter
// selects everything.
type Filter struct {
	// PodNamespace and PodName come from --pod [NAMESPACE/]NAME.
	PodNamespace, PodName string
	// WorkloadNamespace, WorkloadKind and WorkloadName come from
	// --workload [NAMESPACE/][KIND/]NAME.
	WorkloadNamespace, WorkloadKind, WorkloadName string
	// After keeps dumps that crashed at or after this time (--since).
	After time.Time
	// Signal is a canonical signal name (SIGSEGV) from --signal.
	Signal string
}

// workloadKinds are the kinds the controller records, lower-cased to their
// spelling, so that --workload deployment/web works.
var workloadKinds = map[string]string{
	"deployment": "Deployment", "statefulset": "StatefulSet", "daemonset": "DaemonSet",
	"job": "Job", "cronjob": "CronJob", "replicaset": "ReplicaSet", "pod": "Pod",
	"deploy": "Deployment", "sts": "StatefulSet", "ds": "DaemonSet", "cj": "CronJob", "rs": "ReplicaSet",
}

// NewFilter parses the list flags; now anchors --since.
func NewFilter(pod, wl, since, signal string, now time.Time) (Filter, error) {
	var f Filter
	if pod != "" {
		parts := strings.Split(pod, "/")
		switch {
		case len(parts) == 1 && parts[0] != "":
			f.PodName = parts[0]
		case len(parts) == 2 && parts[0] != "" && parts[1] != "":
			f.PodNamespace, f.PodName = parts[0], parts[1]
		default:
			return f, fmt.Errorf("--pod %q: want NAME or NAMESPACE/NAME", pod)
		}
	}
	if wl != "" {
		parts := strings.Split(wl, "/")
		if slices.Contains(parts, "") {
			return f, fmt.Errorf("--workload %q: want NAME, KIND/NAME or NAMESPACE/KIND/NAME", wl)
		}
		switch len(parts) {
		case 1:
			f.WorkloadName = parts[0]
		case 2:
			if kind, ok := workloadKinds[strings.ToLower(parts[0])]; ok {
				f.WorkloadKind, f.WorkloadName = kind, parts[1]
			} else {
				f.WorkloadNamespace, f.WorkloadName = parts[0], parts[1]
			}
		case 3:
			kind, ok := workloadKinds[strings.ToLower(parts[1])]
			if !ok {
				return f, fmt.Errorf("--workload %q: %q is not a workload kind (Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod)", wl, parts[1])
			}
			f.WorkloadNamespace, f.WorkloadKind, f.WorkloadName = parts[0], kind, parts[2]
		default:
			return f, fmt.Errorf("--workload %q: want NAME, KIND/NAME or NAMESPACE/KIND/NAME", wl)
		}
	}
	if since != "" {
		d, err := ParseSince(since)
		if err != nil {
			return f, err
		}
		f.After = now.Add(-d)
	}
	if signal != "" {
		s, err := ParseSignal(signal)
		if err != nil {
			return f, err
		}
		f.Signal = s
	}
	return f, nil
}

// ParseSince reads a --since duration: Go durations (90m, 1h30m) and whole
// days (7d), which is how people think about crash history.
func ParseSince(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, perr := strconv.ParseUint(days, 10, 16)
		if perr != nil {
			err = perr
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--since %q: want a positive duration such as 30m, 12h or 7d", s)
	}
	return d, nil
}

// ParseSignal reads a --signal value: SIGSEGV, segv or 11.
func ParseSignal(s string) (string, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 128 {
			return "", fmt.Errorf("--signal %q: signal numbers are 1 to 128", s)
		}
		return coredogv1.SignalNameOf(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if len(name) < 4 || strings.ContainsFunc(name, func(r rune) bool { return (r < 'A' || r > 'Z') && (r < '0' || r > '9') }) {
		return "", fmt.Errorf("--signal %q: want a signal name or number, e.g. SIGSEGV, segv or 11", s)
	}
	if name == "SIGIOT" {
		name = "SIGABRT"
	}
	return name, nil
}

// Match says whether cd passes the filter.
func (f Filter) Match(cd *coredogv1.CoreDump) bool {
	p := podRef(cd)
	if f.PodName != "" && p.Name != f.PodName {
		return false
	}
	if f.PodNamespace != "" && p.Namespace != f.PodNamespace {
		return false
	}
	if f.WorkloadName != "" {
		kind, name := p.WorkloadKind, p.WorkloadName
		if kind == "" {
			// The annotation is all there is when the status was trimmed.
			kind, name, _ = strings.Cut(cd.Annotations[coredogv1.AnnotationWorkload], "/")
		}
		if name != f.WorkloadName || f.WorkloadKind != "" && kind != f.WorkloadKind {
			return false
		}
		if f.WorkloadNamespace != "" && p.Namespace != f.WorkloadNamespace {
			return false
		}
	}
	if !f.After.IsZero() && cd.CrashTime().Before(f.After) {
		return false
	}
	if f.Signal != "" && !strings.EqualFold(signalName(cd), f.Signal) {
		return false
	}
	return true
}
