package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Debug pod conventions.
const (
	// annotationDebugFor on a debug pod names the CoreDump (NAMESPACE/NAME) it is for.
	annotationDebugFor = "coredog.io/coredump"
	debugPodPrefix     = "coredog-debug-"
	debugContainer     = "debug"
	// remoteCorePath is where the dump goes in the debug pod.
	remoteCorePath = "/tmp/core"
	// debuggerPlaceholder stands for an image with gdb when none was given.
	debuggerPlaceholder = "<an image with gdb>"
)

type debugOptions struct {
	run           bool
	image         string
	podNamespace  string
	podName       string
	debuggerImage string
	timeout       time.Duration
	storageURL    string
	local         bool
	dir           string
}

func debugCommand() command {
	return command{
		name:    "debug",
		args:    "NAME [--run] [flags]",
		summary: "Open a dump in gdb, in a pod on the image that crashed.",
		help: `Print the commands that open a dump in gdb inside a pod running the image
that crashed (status.pod.image, pinned to the image ID the pod ran when
known), or, with --run, do it: fetch and check the dump with your own storage
credentials, create the pod (sleep infinity, on any node of the dump's
architecture), wait until it runs, copy the dump in through the exec API, and
print the gdb command line.

With --local, debug here instead, without the image: the dump and the
program and libraries CoreDog kept by build-id (status.analysis.modules in
state Stored) are fetched into a directory as download --with-binaries
does, and the gdb command line that opens them is printed. The steps
without --run say when that is possible.

The dump cannot be fetched by the pod itself: that would need storage
credentials in the cluster. When the image has no gdb (or no shell, tar or
sleep), the output says how to use an ephemeral debug container instead.

Examples:
  kubectl coredog debug core-5f0c9e1a2b3c
  kubectl coredog debug core-5f0c9e1a2b3c --run
  kubectl coredog debug core-5f0c9e1a2b3c --local --dir /tmp/crash
  kubectl coredog debug core-5f0c9e1a2b3c --run --debugger-image registry.example/gdb:14`,
		setup: func(fs *pflag.FlagSet) func(context.Context, *app, []string) error {
			o := &debugOptions{}
			fs.BoolVar(&o.run, "run", false, "Create the debug pod, copy the dump into it and print the gdb command, instead of printing the steps.")
			fs.StringVar(&o.image, "image", "", "Image for the debug pod (default: the crashed container's image).")
			fs.StringVar(&o.podNamespace, "pod-namespace", "", "Namespace of the debug pod (default: the crashed pod's).")
			fs.StringVar(&o.podName, "pod-name", "", "Name of the debug pod (default: coredog-debug-NAME).")
			fs.StringVar(&o.debuggerImage, "debugger-image", "", "An image with gdb, for the ephemeral-container instructions.")
			fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "How long --run waits for the debug pod to run.")
			fs.StringVar(&o.storageURL, "storage-url", "", "Bucket URL with its options, instead of the policy's spec.storage.url (see download).")
			fs.BoolVar(&o.local, "local", false, "Fetch the dump with the binaries kept by build-id into --dir and print the gdb command, instead of using a pod.")
			fs.StringVar(&o.dir, "dir", "", "Directory for --local (default NAME); it must not exist or be empty.")
			return func(ctx context.Context, a *app, args []string) error {
				if len(args) != 1 {
					return fmt.Errorf("%w: debug takes one CoreDump name", errUsage)
				}
				if o.local && o.run {
					return fmt.Errorf("%w: --local debugs here and --run in a pod: choose one", errUsage)
				}
				if err := a.noAllNamespaces("debug"); err != nil {
					return err
				}
				return a.debug(ctx, args[0], o)
			}
		},
	}
}

// DebugPlan is how one dump gets debugged.
type DebugPlan struct {
	DumpNamespace, DumpName string
	// Namespace and PodName of the debug pod.
	Namespace, PodName string
	// Image of the debug pod; ImageNote says where it came from, when that matters.
	Image, ImageNote string
	// Arch is the kubernetes.io/arch the dump needs, or "".
	Arch string
	// Executable is the program's path in the image; ExecutableExact says
	// whether the dump named the path or only the program's name.
	Executable      string
	ExecutableExact bool
	// Container of the debug pod: "" for kubectl run's (named after the
	// pod), "debug" for the pod --run creates.
	Container string
	// Target is the crashed pod and container, for an ephemeral container
	// on the original pod, when known.
	TargetNamespace, TargetPod, TargetContainer string
	// StoredModules counts the dump's modules kept by build-id, which
	// debug --local and download --with-binaries fetch.
	StoredModules int
}

// PlanDebug decides the debug pod for cd. image, namespace and podName
// override what the dump says.
func PlanDebug(cd *coredogv1.CoreDump, image, namespace, podName string) (DebugPlan, error) {
	p := podRef(cd)
	plan := DebugPlan{DumpNamespace: cd.Namespace, DumpName: cd.Name,
		TargetNamespace: p.Namespace, TargetPod: p.Name, TargetContainer: p.Container}
	switch {
	case image != "":
		plan.Image = image
	case pinned(p.ImageID) != "":
		plan.Image = pinned(p.ImageID)
		plan.ImageNote = fmt.Sprintf("the image ID the crashed container ran (%s), since a tag may have moved", p.Image)
	case p.Image != "":
		plan.Image = p.Image
	default:
		return plan, fmt.Errorf("CoreDump %s does not know the crashed image (its pod is "+
			"%s): pass --image with the image the program came from", cd.Name, cmp.Or(string(p.ResolvedBy), "unknown"))
	}
	plan.Namespace = namespace
	if plan.Namespace == "" {
		plan.Namespace = p.Namespace
	}
	if plan.Namespace == "" {
		plan.Namespace = "default"
	}
	plan.PodName = podName
	if plan.PodName == "" {
		plan.PodName = strings.TrimRight(truncateBytes(debugPodPrefix+cd.Name, 63), "-.")
	}
	if cd.Spec.ELF != nil {
		plan.Arch = kubeArch(cd.Spec.ELF.Machine)
	}
	plan.Executable, plan.ExecutableExact = executablePath(cd)
	if a := cd.Status.Analysis; a != nil {
		for _, m := range a.Modules {
			if m.State == coredogv1.ModuleStored && m.BuildID != "" {
				plan.StoredModules++
			}
		}
	}
	return plan, nil
}

// pinned is image@digest from an imageID the kubelet reported, when it is
// a pullable reference ("docker-pullable://repo@sha256:..." or
// "repo@sha256:..."); a bare "sha256:..." is a local ID, useless elsewhere.
func pinned(imageID string) string {
	id := strings.TrimPrefix(imageID, "docker-pullable://")
	repo, digest, ok := strings.Cut(id, "@sha256:")
	if !ok || repo == "" || len(digest) != 64 {
		return ""
	}
	return repo + "@sha256:" + digest
}

// kubeArch maps an ELF machine to the node label value.
func kubeArch(machine string) string {
	switch strings.ToLower(machine) {
	case "x86_64", "amd64", "em_x86_64":
		return "amd64"
	case "aarch64", "arm64", "em_aarch64":
		return "arm64"
	}
	return ""
}

// executablePath is the program's path for gdb: the crash module when it
// is the program itself, else the name (withCommandLine may do better).
func executablePath(cd *coredogv1.CoreDump) (string, bool) {
	exe := cd.Spec.Process.Executable
	matches := func(p string) bool {
		base := path.Base(p)
		// The kernel's comm is cut at 15 bytes.
		return exe != "" && (base == exe || len(exe) == 15 && strings.HasPrefix(base, exe))
	}
	if e := cd.Spec.ELF; e != nil && path.IsAbs(e.CrashModule) && matches(e.CrashModule) {
		return e.CrashModule, true
	}
	if path.IsAbs(exe) {
		return exe, true
	}
	if exe == "" {
		exe = "PROGRAM"
	}
	return exe, false
}

// withCommandLine takes the program's path from an absolute first argument
// of the stored command line when the CoreDump alone did not give it.
func withCommandLine(plan DebugPlan, commandLine string) DebugPlan {
	if plan.ExecutableExact {
		return plan
	}
	if f := strings.Fields(commandLine); len(f) > 0 && path.IsAbs(f[0]) {
		plan.Executable, plan.ExecutableExact = f[0], true
	}
	return plan
}

func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// shellQuote quotes s for a POSIX shell when it needs it. Values come from
// the node and the crashed program (its name, its command line): whatever
// they hold, the quoted word is one argument, never a command. Control
// characters and invalid UTF-8 are written as $'\xHH' escapes (bash, zsh,
// ksh and dash 0.5.12+ read them), so that a printed command is one line
// that shows what it holds.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && !strings.ContainsRune("-_./:@=,+%", r)
	}) < 0 {
		return s
	}
	if safe(s) != s {
		return ansiCQuote(s)
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ansiCQuote is $'...' quoting: printable runes as they are, but for ' and
// \; every other byte as \xHH.
func ansiCQuote(s string) string {
	var b strings.Builder
	b.WriteString("$'")
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\'' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == utf8.RuneError && n <= 1, !unicode.IsPrint(r) && r != ' ':
			for _, c := range []byte(s[i : i+n]) {
				fmt.Fprintf(&b, "\\x%02x", c)
			}
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	b.WriteByte('\'')
	return b.String()
}

// gdbCommand is the gdb command line inside the debug pod.
func (p DebugPlan) gdbCommand() string {
	return "gdb " + shellQuote(p.Executable) + " " + remoteCorePath
}

// overrides is kubectl run's --overrides for the pod spec parts kubectl run
// has no flags for.
func (p DebugPlan) overrides() string {
	spec := map[string]any{"automountServiceAccountToken": false, "enableServiceLinks": false}
	if p.Arch != "" {
		spec["nodeSelector"] = map[string]string{"kubernetes.io/arch": p.Arch}
	}
	b, _ := json.Marshal(map[string]any{"apiVersion": "v1", "spec": spec})
	return string(b)
}

// RenderDebugSteps prints the commands that debug the dump by hand.
func RenderDebugSteps(w io.Writer, p DebugPlan, debuggerImage string) {
	ns := "-n " + shellQuote(p.Namespace)
	pod := shellQuote(p.PodName)
	fmt.Fprintf(w, "# Debug CoreDump %s in a pod on the image that crashed.\n", p.DumpName)
	if p.ImageNote != "" {
		fmt.Fprintf(w, "# The image is %s.\n", safe(p.ImageNote))
	}
	fmt.Fprintf(w, "\n# 1. Fetch the dump with your own storage credentials (its SHA-256 is checked):\n")
	fmt.Fprintf(w, "kubectl coredog download %s -n %s -o core\n", shellQuote(p.DumpName), shellQuote(p.DumpNamespace))
	fmt.Fprintf(w, "\n# 2. Start a pod that idles on that image (any node")
	if p.Arch != "" {
		fmt.Fprintf(w, " of architecture %s", p.Arch)
	}
	fmt.Fprintf(w, "):\n")
	fmt.Fprintf(w, "kubectl run %s %s --image=%s --restart=Never --overrides=%s --command -- sleep infinity\n", pod, ns, shellQuote(p.Image), shellQuote(p.overrides()))
	fmt.Fprintf(w, "kubectl wait %s --for=condition=Ready pod/%s\n", ns, pod)
	fmt.Fprintf(w, "\n# 3. Copy the dump in (kubectl cp needs tar in the image) and open it:\n")
	fmt.Fprintf(w, "kubectl cp core %s/%s:%s\n", shellQuote(p.Namespace), pod, remoteCorePath)
	fmt.Fprintf(w, "kubectl exec -it %s %s -- %s\n", ns, pod, p.gdbCommand())
	if !p.ExecutableExact {
		fmt.Fprintf(w, "#    The dump names the program %s but not its "+
			"path; find it with: kubectl exec %s %s -- sh -c %s\n", shellQuote(p.Executable), ns, pod, shellQuote("command -v "+shellQuote(p.Executable)))
	}
	renderNoGDB(w, p, debuggerImage, "core")
	fmt.Fprintf(w, "\n# When done:\nkubectl delete pod %s %s\n", ns, pod)
	renderLocal(w, p)
}

// renderLocal says how to debug here when the dump's binaries were kept.
func renderLocal(w io.Writer, p DebugPlan) {
	if p.StoredModules == 0 {
		return
	}
	fmt.Fprintf(w, "\n# Or debug here, without the image: %d of the program's files were kept by build-id.\n", p.StoredModules)
	fmt.Fprintf(w, "# Fetch them with the dump into a sysroot, and run the gdb command this prints:\n")
	fmt.Fprintf(w, "kubectl coredog debug %s -n %s --local\n", shellQuote(p.DumpName), shellQuote(p.DumpNamespace))
	fmt.Fprintf(w, "# or let gdb fetch them itself (the command prints DEBUGINFOD_URLS):\n")
	fmt.Fprintf(w, "kubectl coredog debuginfod &\n")
	fmt.Fprintf(w, "DEBUGINFOD_URLS=http://127.0.0.1:PORT gdb -iex 'set debuginfod enabled on' -c core\n")
}

// renderNoGDB says what to do when the image lacks gdb (or tar, sh, sleep).
// local is the downloaded dump's path, or "" when it is already in the pod.
func renderNoGDB(w io.Writer, p DebugPlan, debuggerImage, local string) {
	if debuggerImage == "" {
		debuggerImage = debuggerPlaceholder
	}
	ns := "-n " + shellQuote(p.Namespace)
	pod := shellQuote(p.PodName)
	exe := p.Executable
	if !p.ExecutableExact {
		exe = "/path/to/" + exe
	}
	fmt.Fprintf(w, "\n# If the image has no gdb (or no tar), attach an ephemeral container with gdb\n")
	fmt.Fprintf(w, "# that shares the pod's processes; the image's files are under /proc/1/root:\n")
	fmt.Fprintf(w, "kubectl debug -it %s %s --image=%s --target=%s -c coredog-gdb -- sh\n", ns, pod, shellQuote(debuggerImage), debugContainerName(p))
	if local != "" {
		fmt.Fprintf(w, "#   then, from another terminal: kubectl cp %s %s/%s:%s -c coredog-gdb\n", shellQuote(local), shellQuote(p.Namespace), pod, remoteCorePath)
	}
	fmt.Fprintf(w, "#   and in that shell:           gdb -iex 'set sysroot /proc/1/root' %s %s\n", shellQuote("/proc/1/root"+exe), remoteCorePath)
	if p.TargetPod != "" && p.TargetContainer != "" {
		fmt.Fprintf(w, "# If the image has no sleep (distroless, scratch) the pod cannot idle; attach to the\n")
		fmt.Fprintf(w, "# crashed pod itself while it still runs, and find the program's PID with ps:\n")
		fmt.Fprintf(w, "kubectl debug -it -n %s %s --image=%s --target=%s -c coredog-gdb -- sh\n",
			shellQuote(p.TargetNamespace), shellQuote(p.TargetPod), shellQuote(debuggerImage), shellQuote(p.TargetContainer))
	}
}

// debugContainerName is the container of the debug pod: kubectl run names
// it after the pod.
func debugContainerName(p DebugPlan) string {
	if p.Container != "" {
		return shellQuote(p.Container)
	}
	return shellQuote(p.PodName)
}

func (a *app) debug(ctx context.Context, arg string, o *debugOptions) error {
	cd, err := a.getDump(ctx, arg)
	if err != nil {
		return err
	}
	if o.local {
		_, err := a.downloadWithBinaries(ctx, cd, downloadOptions{output: o.dir, storageURL: o.storageURL})
		return err
	}
	plan, err := PlanDebug(cd, o.image, o.podNamespace, o.podName)
	if err != nil {
		return err
	}
	if _, serr := storedObject(cd); serr == nil && !plan.ExecutableExact {
		// The arguments are kept only with the stored dump; without
		// access to it the program's name does.
		if cmdline, err := a.storedCommandLine(ctx, cd, o.storageURL); err == nil {
			plan = withCommandLine(plan, cmdline)
		}
	}
	if !o.run {
		if _, err := storedObject(cd); err != nil {
			fmt.Fprintf(a.stderr, "Warning: %v\n", err)
		}
		RenderDebugSteps(a.stdout, plan, o.debuggerImage)
		return nil
	}
	return a.debugRun(ctx, cd, plan, o)
}

// DebugPod is the pod debug --run creates: the crashed image, idling, with
// no service account token, no privileges and nothing from the original
// pod but its image pull secrets.
func DebugPod(p DebugPlan, pullSecrets []corev1.LocalObjectReference) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      p.PodName,
			Namespace: p.Namespace,
			Labels: map[string]string{
				"app.kubernetes.io/name":       "coredog-debug",
				"app.kubernetes.io/managed-by": "kubectl-coredog",
			},
			Annotations: map[string]string{annotationDebugFor: p.DumpNamespace + "/" + p.DumpName},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  new(false),
			EnableServiceLinks:            new(false),
			TerminationGracePeriodSeconds: new(int64(1)),
			ImagePullSecrets:              pullSecrets,
			NodeSelector:                  map[string]string{"kubernetes.io/os": "linux"},
			Containers: []corev1.Container{{
				Name:    debugContainer,
				Image:   p.Image,
				Command: []string{"sleep", "infinity"},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: new(false),
				},
			}},
		},
	}
	if p.Arch != "" {
		pod.Spec.NodeSelector["kubernetes.io/arch"] = p.Arch
	}
	return pod
}

func (a *app) debugRun(ctx context.Context, cd *coredogv1.CoreDump, plan DebugPlan, o *debugOptions) error {
	plan.Container = debugContainer
	c, err := a.client()
	if err != nil {
		return err
	}
	// Fetch first: without storage access there is nothing to debug, and
	// no pod should be left behind.
	dir, err := os.MkdirTemp("", "coredog-debug-")
	if err != nil {
		return err
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(dir)
		}
	}()
	local, err := a.fetchDump(ctx, cd, downloadOptions{output: filepath.Join(dir, "core"), storageURL: o.storageURL, scratch: true})
	if err != nil {
		return err
	}

	var pullSecrets []corev1.LocalObjectReference
	if plan.TargetPod != "" && plan.TargetNamespace == plan.Namespace {
		var orig corev1.Pod
		if err := c.Get(ctx, client.ObjectKey{Namespace: plan.TargetNamespace, Name: plan.TargetPod}, &orig); err == nil {
			pullSecrets = orig.Spec.ImagePullSecrets
		}
	}
	want := DebugPod(plan, pullSecrets)
	err = c.Create(ctx, want)
	switch {
	case apierrors.IsAlreadyExists(err):
		var have corev1.Pod
		if err := c.Get(ctx, client.ObjectKeyFromObject(want), &have); err != nil {
			return apiError(err, "reading pod "+plan.Namespace+"/"+plan.PodName)
		}
		if have.Annotations[annotationDebugFor] != want.Annotations[annotationDebugFor] || len(have.Spec.Containers) == 0 || have.Spec.Containers[0].Image != plan.Image {
			return fmt.Errorf("pod %s/%s exists and is not a debug pod for %s on %s: delete it, or pass --pod-name", plan.Namespace, plan.PodName, cd.Name, plan.Image)
		}
		fmt.Fprintf(a.stderr, "Reusing debug pod %s/%s\n", plan.Namespace, plan.PodName)
	case err != nil:
		return apiError(err, "creating debug pod "+plan.Namespace+"/"+plan.PodName)
	default:
		fmt.Fprintf(a.stderr, "Created pod %s/%s on %s\n", plan.Namespace, plan.PodName, plan.Image)
	}
	if err := a.waitRunning(ctx, plan, o.timeout); err != nil {
		return err
	}
	ns, pod := "-n "+shellQuote(plan.Namespace), shellQuote(plan.PodName)
	if err := a.copyIntoPod(ctx, plan.Namespace, plan.PodName, debugContainer, local, remoteCorePath); err != nil {
		keep = true
		fmt.Fprintf(a.stdout, "Could not copy the dump into the pod (%v).\nThe checked dump is at %s; remove it when done.\n", err, local)
		fmt.Fprintf(a.stdout, "\n# If the image has tar:\nkubectl cp %s %s/%s:%s -c %s\nkubectl exec -it %s %s -- %s\n",
			shellQuote(local), shellQuote(plan.Namespace), pod, remoteCorePath, debugContainer, ns, pod, plan.gdbCommand())
		renderNoGDB(a.stdout, plan, o.debuggerImage, local)
		fmt.Fprintf(a.stdout, "\n# When done:\nkubectl delete pod %s %s\n", ns, pod)
		return nil
	}
	fmt.Fprintf(a.stdout, "The dump is at %s in pod %s/%s (image %s).\n", remoteCorePath, safe(plan.Namespace), safe(plan.PodName), safe(plan.Image))
	if a.hasProgram(ctx, plan, "gdb") {
		fmt.Fprintf(a.stdout, "\n# Open it:\nkubectl exec -it %s %s -- %s\n", ns, pod, plan.gdbCommand())
		if !plan.ExecutableExact {
			fmt.Fprintf(a.stdout, "#   The dump names the program %s but not its path; find it in the pod with: command -v %s\n", shellQuote(plan.Executable), shellQuote(plan.Executable))
		}
	} else {
		fmt.Fprintf(a.stdout, "\nThe image has no gdb on its PATH.\n")
		renderNoGDB(a.stdout, plan, o.debuggerImage, "")
	}
	fmt.Fprintf(a.stdout, "\n# When done:\nkubectl delete pod %s %s\n", ns, pod)
	return nil
}

// errPodNotRunning: the debug pod did not reach Running.
var errPodNotRunning = errors.New("debug pod is not running")

// waitRunning polls the debug pod until its container runs, it fails, or timeout.
func (a *app) waitRunning(ctx context.Context, plan DebugPlan, timeout time.Duration) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "not created yet"
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		var pod corev1.Pod
		err := c.Get(ctx, client.ObjectKey{Namespace: plan.Namespace, Name: plan.PodName}, &pod)
		if err == nil {
			state, done, ferr := PodProgress(&pod)
			if done {
				return ferr
			}
			last = state
		} else if ctx.Err() == nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: pod %s/%s did not run within %s (%s); see kubectl describe pod -n %s %s, and delete it when done",
				errPodNotRunning, plan.Namespace, plan.PodName, timeout, last, plan.Namespace, plan.PodName)
		case <-tick.C:
		}
	}
}

// PodProgress reads a debug pod's status: a short state for people, and
// whether waiting is over (with an error when it failed).
func PodProgress(pod *corev1.Pod) (state string, done bool, err error) {
	var cs *corev1.ContainerStatus
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == debugContainer {
			cs = &pod.Status.ContainerStatuses[i]
		}
	}
	name := pod.Namespace + "/" + pod.Name
	switch pod.Status.Phase {
	case corev1.PodRunning:
		if cs != nil && cs.State.Running != nil {
			return "Running", true, nil
		}
	case corev1.PodFailed, corev1.PodSucceeded:
		msg := string(pod.Status.Phase)
		if cs != nil && cs.State.Terminated != nil {
			t := cs.State.Terminated
			msg = fmt.Sprintf("the container exited with code %d", t.ExitCode)
			if why := strings.TrimSpace(t.Reason + " " + strings.TrimSpace(t.Message)); why != "" {
				msg += " (" + why + ")"
			}
		}
		return msg, true, fmt.Errorf("%w: pod %s: %s; an image without `sleep` cannot idle: see kubectl "+
			"coredog debug (without --run) for an ephemeral container instead", errPodNotRunning, name, msg)
	}
	if cs != nil && cs.State.Waiting != nil {
		w := cs.State.Waiting
		switch w.Reason {
		case "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
			return w.Reason, true, fmt.Errorf("%w: pod %s cannot pull its image (%s: %s); pass "+
				"--image, or give the namespace an image pull secret", errPodNotRunning, name, w.Reason, w.Message)
		case "CreateContainerError", "RunContainerError", "CreateContainerConfigError", "CrashLoopBackOff", "StartError":
			return w.Reason, true, fmt.Errorf("%w: pod %s cannot start (%s: %s); an image without `sleep` cannot idle: see "+
				"kubectl coredog debug (without --run) for an ephemeral container instead", errPodNotRunning, name, w.Reason, w.Message)
		}
		return w.Reason, false, nil
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return "not scheduled: " + c.Message, false, nil
		}
	}
	if pod.Status.Phase == "" {
		return "Pending", false, nil
	}
	return string(pod.Status.Phase), false, nil
}
