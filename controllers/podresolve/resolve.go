package podresolve

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// DefaultWindow is how far apart a dump and a container's termination may be
// and still be one event, used when Resolve is given no window. Writing a
// large core takes seconds and the kubelet's timestamps have one-second
// resolution, so this is generous, yet short next to a crash loop's back-off.
const DefaultWindow = 30 * time.Second

// Crash is what the node agent recorded about a crash.
type Crash struct {
	NodeName    string
	ContainerID string    // runtime-prefixed, e.g. "containerd://<64hex>", "cri-o://...", "docker://...", or "" when unknown
	Hostname    string    // the crashed process's hostname (%h) — in a pod, the pod's hostname
	Executable  string    // e.g. "postgres" (the kernel's comm, may be truncated to 15 bytes)
	Signal      int       // e.g. 11
	DumpedAt    time.Time // zero when unknown
}

// Result is which pod and container a crash belongs to, and why.
type Result struct {
	Pod            *corev1.Pod          // nil when unresolved
	Container      string               // container name; "" when the pod is known but not the container
	Image, ImageID string               // from the container status (image from spec when status lacks it)
	ResolvedBy     coredogv1.ResolvedBy // ContainerID, Hostname, Termination, or Unresolved
	Message        string               // for people: why, and the candidates (namespace/name[/container]) when unresolved or ambiguous
	Candidates     []string             // namespace/name[/container], sorted: what remained when no single container could be chosen
}

// Resolve picks the pod among pods (all pods the caller found on
// crash.NodeName; pods on other nodes are ignored, in case the caller's
// list was wider). It never guesses:
//
//  1. Container ID, against the current and the last-terminated ID of every
//     container, init and ephemeral ones included, compared on the hex part so
//     a missing or different runtime prefix does not matter. One container →
//     ResolvedBy ContainerID. An ID that matches nothing falls through to 2
//     (the status may not show it yet, or the container has restarted twice).
//  2. Hostname, as the kubelet sets it (spec.hostnameOverride, else
//     spec.hostname or the pod's name cut to 63 bytes; the FQDN with
//     setHostnameAsFQDN). Host-network pods never match. Candidates are every
//     container of the matching pods, less those the status proves were not
//     running at the dump (see the package doc). One left → ResolvedBy
//     Hostname.
//  3. Evidence among several: containers that terminated with 128+signal (or
//     that signal) within window of DumpedAt narrow the field; with DumpedAt
//     unknown such an exit code counts only if exactly one candidate has it.
//     Then the executable against command[0], args[0] and the image name.
//     One left → resolved (Termination when termination evidence took part,
//     else Hostname). Several left, all in one pod → that pod with Container
//     "" and ResolvedBy Hostname (or Termination), the message saying the
//     container is unknown. Several pods → Unresolved with the candidates.
//  4. Nothing matched → Unresolved, saying what was tried.
//
// window <= 0 means DefaultWindow.
func Resolve(c Crash, pods []corev1.Pod, window time.Duration) Result {
	if window <= 0 {
		window = DefaultWindow
	}
	var onNode []*corev1.Pod
	for i := range pods {
		if c.NodeName != "" && pods[i].Spec.NodeName == c.NodeName {
			onNode = append(onNode, &pods[i])
		}
	}

	hasID := containerIDKey(c.ContainerID) != ""
	if hasID {
		if r, ok := byContainerID(c, onNode); ok {
			return r
		}
	}
	if c.Hostname != "" {
		if r, ok := byHostname(c, onNode, window); ok {
			if hasID {
				r.Message = fmt.Sprintf("No pod on node %s has container ID %q. %s", c.NodeName, c.ContainerID, r.Message)
			}
			return r
		}
	}
	return noMatch(c, onNode, hasID)
}

// byContainerID applies rule 1; ok is false when no container has the ID.
func byContainerID(c Crash, pods []*corev1.Pod) (Result, bool) {
	var found []candidate
	var fromLast []bool
	for _, p := range pods {
		for _, cand := range containersOf(p) {
			st := cand.status
			if st == nil {
				continue
			}
			current := sameContainerID(st.ContainerID, c.ContainerID) ||
				(st.State.Terminated != nil && sameContainerID(st.State.Terminated.ContainerID, c.ContainerID))
			last := st.LastTerminationState.Terminated != nil &&
				sameContainerID(st.LastTerminationState.Terminated.ContainerID, c.ContainerID)
			if current || last {
				found = append(found, cand)
				fromLast = append(fromLast, !current)
			}
		}
	}
	switch len(found) {
	case 0:
		return Result{}, false
	case 1:
		msg := fmt.Sprintf("Container ID %q is container %q of pod %s", c.ContainerID, found[0].name, podKey(found[0].pod))
		if fromLast[0] {
			msg += " (its last termination; it has restarted since)"
		}
		return resolvedTo(found[0], coredogv1.ResolvedByContainerID, msg), true
	}
	// IDs are unique on a node; several matches mean stale or inconsistent
	// status, and picking one would be a guess.
	names := candidateNames(found)
	return Result{
		ResolvedBy: coredogv1.ResolvedByUnresolved,
		Message: fmt.Sprintf("Container ID %q matches %d containers on node %s (%s); not choosing between them",
			c.ContainerID, len(found), c.NodeName, strings.Join(names, ", ")),
		Candidates: names,
	}, true
}

// byHostname applies rules 2 and 3; ok is false when no pod has the hostname.
func byHostname(c Crash, pods []*corev1.Pod, window time.Duration) (Result, bool) {
	var matched []*corev1.Pod
	for _, p := range pods {
		if hostnameMatches(p, c.Hostname) {
			matched = append(matched, p)
		}
	}
	if len(matched) == 0 {
		return Result{}, false
	}

	var notes []string
	if len(matched) == 1 {
		notes = append(notes, fmt.Sprintf("Pod %s is the only pod on node %s with hostname %q", podKey(matched[0]), c.NodeName, c.Hostname))
	} else {
		keys := make([]string, len(matched))
		for i, p := range matched {
			keys[i] = podKey(p)
		}
		sort.Strings(keys)
		notes = append(notes, fmt.Sprintf("%d pods on node %s have hostname %q (%s)", len(matched), c.NodeName, c.Hostname, strings.Join(keys, ", ")))
	}

	cands, ruledOut := runningAt(matched, c.DumpedAt, window)
	if len(ruledOut) > 0 {
		notes = append(notes, "ruled out: "+strings.Join(ruledOut, ", "))
	}
	if len(cands) == 0 {
		keys := make([]string, len(matched))
		for i, p := range matched {
			keys[i] = podKey(p)
		}
		sort.Strings(keys)
		notes = append(notes, "no container left that can have dumped core; not guessing")
		return unresolved(notes, keys), true
	}
	if len(cands) == 1 {
		notes = append(notes, fmt.Sprintf("container %q of pod %s is the only one that can have dumped core", cands[0].name, podKey(cands[0].pod)))
		return resolvedTo(cands[0], coredogv1.ResolvedByHostname, sentences(notes)), true
	}

	survivors, byTermination, evidence := weigh(c, cands, window)
	notes = append(notes, evidence...)
	by := coredogv1.ResolvedByHostname
	if byTermination {
		by = coredogv1.ResolvedByTermination
	}
	names := candidateNames(survivors)
	switch {
	case len(survivors) == 1:
		notes = append(notes, fmt.Sprintf("so the crash is container %q of pod %s", survivors[0].name, podKey(survivors[0].pod)))
		return resolvedTo(survivors[0], by, sentences(notes)), true
	case onePod(survivors):
		// The pod is certain; only the container is not. Recording the pod
		// is a fact, and naming a container would be the guess.
		notes = append(notes, fmt.Sprintf("the container could not be determined (candidates: %s)", strings.Join(names, ", ")))
		return Result{
			Pod:        survivors[0].pod.DeepCopy(),
			ResolvedBy: by,
			Message:    sentences(notes),
			Candidates: names,
		}, true
	}
	notes = append(notes, fmt.Sprintf("the crash could be any of %s; not guessing", strings.Join(names, ", ")))
	return unresolved(notes, names), true
}

// runningAt lists the containers of pods that can have dumped core at
// dumpedAt, and why the others cannot.
func runningAt(pods []*corev1.Pod, dumpedAt time.Time, window time.Duration) (cands []candidate, ruledOut []string) {
	for _, p := range pods {
		if why := podStartedAfter(p, dumpedAt, window); why != "" {
			ruledOut = append(ruledOut, fmt.Sprintf("%s (%s)", podKey(p), why))
			continue
		}
		for _, cand := range containersOf(p) {
			if why := finishedBefore(cand, dumpedAt, window); why != "" {
				ruledOut = append(ruledOut, fmt.Sprintf("%s (%s)", cand, why))
				continue
			}
			cands = append(cands, cand)
		}
	}
	return cands, ruledOut
}

// weigh narrows cands by termination evidence, then by executable name. A
// kind of evidence that matches none of them leaves them as they are: its
// absence proves nothing (the crashed process may have been a child that
// did not take its container down, or have a name of its own).
func weigh(c Crash, cands []candidate, window time.Duration) (out []candidate, byTermination bool, notes []string) {
	out = cands
	code := 128 + c.Signal
	term := filter(out, func(x candidate) bool { return terminatedNear(x, c.Signal, c.DumpedAt, window) })
	switch {
	case c.Signal <= 0:
		notes = append(notes, "the crash's signal is unknown, so terminations are no evidence")
	case len(term) == 0 && c.DumpedAt.IsZero():
		notes = append(notes, fmt.Sprintf("no container terminated with exit code %d or signal %d", code, c.Signal))
	case len(term) == 0:
		notes = append(notes, fmt.Sprintf("no container terminated with exit code %d or signal %d within %s of the dump", code, c.Signal, window))
	case c.DumpedAt.IsZero() && len(term) > 1:
		// Without a dump time, an exit code may be from any earlier crash;
		// only a single one stands out enough to count.
		notes = append(notes, fmt.Sprintf("%s terminated with exit code %d or signal %d, but the dump time is unknown, so that is no evidence",
			strings.Join(candidateNames(term), ", "), code, c.Signal))
	default:
		when := fmt.Sprintf("within %s of the dump", window)
		if c.DumpedAt.IsZero() {
			when = "(the dump time is unknown; it is the only one)"
		}
		notes = append(notes, fmt.Sprintf("%s terminated with exit code %d or signal %d %s",
			strings.Join(candidateNames(term), ", "), code, c.Signal, when))
		out, byTermination = term, true
	}

	if c.Executable == "" || len(out) == 1 {
		return out, byTermination, notes
	}
	exe := filter(out, func(x candidate) bool { return runsExecutable(x, c.Executable) })
	switch {
	case len(exe) == 0:
		notes = append(notes, fmt.Sprintf("executable %q matches no candidate's command or image", c.Executable))
	case len(exe) == len(out):
		if len(out) > 1 {
			notes = append(notes, fmt.Sprintf("executable %q matches every candidate's command or image", c.Executable))
		}
	default:
		notes = append(notes, fmt.Sprintf("executable %q matches the command or image of %s", c.Executable, strings.Join(candidateNames(exe), ", ")))
		out = exe
	}
	return out, byTermination, notes
}

// noMatch applies rule 4.
func noMatch(c Crash, pods []*corev1.Pod, hasID bool) Result {
	if c.NodeName == "" {
		return unresolved([]string{"The crash names no node, and pods are matched only on the node that crashed"}, nil)
	}
	var tried []string
	if hasID {
		tried = append(tried, fmt.Sprintf("container ID %q", c.ContainerID))
	}
	if c.Hostname != "" {
		tried = append(tried, fmt.Sprintf("hostname %q", c.Hostname))
	}
	if len(tried) == 0 {
		return unresolved([]string{fmt.Sprintf("The crash on node %s recorded neither a container ID nor a hostname, so no pod can be tied to it", c.NodeName)}, nil)
	}
	msg := fmt.Sprintf("No pod on node %s has %s", c.NodeName, strings.Join(tried, " or "))
	hostNet := 0
	for _, p := range pods {
		if p.Spec.HostNetwork {
			hostNet++
		}
	}
	if c.Hostname != "" && hostNet > 0 {
		// Worth saying: a crash in one of these carries the node's hostname
		// and cannot be told apart by it.
		msg += fmt.Sprintf(" (%d host-network pods there share the node's hostname and are never matched by it)", hostNet)
	}
	return unresolved([]string{msg}, nil)
}

func resolvedTo(c candidate, by coredogv1.ResolvedBy, msg string) Result {
	r := Result{Pod: c.pod.DeepCopy(), Container: c.name, Image: c.image, ResolvedBy: by, Message: msg}
	if st := c.status; st != nil {
		if st.Image != "" {
			r.Image = st.Image
		}
		r.ImageID = st.ImageID
	}
	return r
}

func unresolved(notes, candidates []string) Result {
	return Result{ResolvedBy: coredogv1.ResolvedByUnresolved, Message: sentences(notes), Candidates: candidates}
}

// sentences joins notes into one message that starts with a capital letter.
func sentences(notes []string) string {
	s := strings.Join(notes, "; ")
	if s != "" {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	return s
}

func filter(cs []candidate, keep func(candidate) bool) []candidate {
	var out []candidate
	for _, c := range cs {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

func onePod(cs []candidate) bool {
	for _, c := range cs[1:] {
		if c.pod != cs[0].pod {
			return false
		}
	}
	return true
}

func candidateNames(cs []candidate) []string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.String()
	}
	sort.Strings(names)
	return names
}
