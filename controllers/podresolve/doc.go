// Package podresolve decides which pod and container a core dump belongs to,
// and names the workload that owns that pod.
//
// It owns the rules for tying a crash on a node to a pod: matching container
// IDs, reproducing the hostname the kubelet gives a pod, and weighing the
// evidence (a container that terminated with the crash's signal near the dump
// time, the executable's name) when a hostname is shared. Resolve is a pure
// function of what the caller read; WorkloadOf only reads ReplicaSets and
// Jobs. The package must not list pods, write any object, record events or
// log: the CoreDump reconciler does all of that with what it returns.
//
// The rule above all others is: never guess. When the facts fit more than
// one pod, the answer is Unresolved with the candidates named, because a dump
// filed under the wrong pod sends someone to debug the wrong program. A pod
// is recorded without a container when the hostname pins the pod but nothing
// tells its containers apart: that is a fact about the pod, not a guess about
// the container.
//
// Choices this package makes where the design is silent:
//
//   - Every container of a pod shares its hostname, so init and ephemeral
//     containers are candidates as much as regular ones. A pod with an init
//     container therefore has two candidates; evidence must decide between
//     them, unless the status proves one was not running (below).
//   - A candidate is ruled out only by a fact that makes the crash
//     impossible for it: the pod started after the dump (a StatefulSet pod
//     recreated under the same name), or the container's current state is
//     terminated and it finished before the dump (a completed init container,
//     a finished Job pod). The kubelet and the kernel's %t share the node's
//     clock; the window absorbs the kubelet's one-second timestamps.
//   - When the executable's name matches several pods' containers, those
//     survive; when it matches none, it is no evidence either way (the crashed
//     process may be a child of the entrypoint). The same holds for
//     termination evidence.
//   - ResolvedBy has no value for "the executable decided", so a hostname
//     match narrowed by the executable is reported as Hostname, and any
//     resolution that termination evidence took part in as Termination; the
//     Message says exactly what decided.
//   - A pod with spec.setHostnameAsFQDN carries its FQDN as hostname; the
//     cluster domain is the kubelet's setting, so only the part before it is
//     compared. spec.hostnameOverride replaces hostname and subdomain.
package podresolve
