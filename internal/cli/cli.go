package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/internal/scheme"
	"github.com/coredog/coredog/internal/storage"
)

// DefaultNamespace is where CoreDumps live unless -n (or COREDOG_NAMESPACE)
// says otherwise: the controller's namespace, not the kubeconfig context's,
// because CoreDumps of every team's pods are kept there.
const DefaultNamespace = "coredog-system"

// envNamespace overrides DefaultNamespace for installs in another namespace.
const envNamespace = "COREDOG_NAMESPACE"

// errUsage marks errors in the command line; Run's caller prints the usage hint.
var errUsage = errors.New("usage")

// app is one invocation: global flags, the clients built from them, and the
// process's surroundings, injectable for tests.
type app struct {
	stdout, stderr io.Writer
	now            func() time.Time
	getenv         func(string) string
	// isTerminal says whether w is a terminal (progress is drawn only there).
	isTerminal func(w io.Writer) bool
	// openStore opens a bucket (storage.Open; tests may wrap it).
	openStore func(ctx context.Context, loc *storage.Location, creds map[string][]byte) (storage.Store, error)

	kubeconfig    string
	overrides     clientcmd.ConfigOverrides
	namespace     string
	allNamespaces bool

	restCfg *rest.Config
	c       client.Client
}

// Run runs kubectl-coredog with args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := &app{
		stdout:     stdout,
		stderr:     stderr,
		now:        time.Now,
		getenv:     os.Getenv,
		isTerminal: isTerminal,
		openStore:  storage.Open,
	}
	err := a.run(ctx, args)
	if errors.Is(err, errUsage) {
		return fmt.Errorf("%w (see kubectl coredog --help)", err)
	}
	return err
}

// command is one subcommand. setup binds its flags and returns the function
// that runs it with the positional arguments.
type command struct {
	name    string
	args    string
	summary string
	help    string
	setup   func(fs *pflag.FlagSet) func(ctx context.Context, a *app, args []string) error
}

func commands() []command {
	return []command{listCommand(), describeCommand(), downloadCommand(), debugCommand(), debuginfodCommand(), statusCommand(), completionCommand()}
}

func (a *app) globalFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("kubectl coredog", pflag.ContinueOnError)
	fs.SortFlags = false
	def := DefaultNamespace
	if v := a.getenv(envNamespace); v != "" {
		def = v
	}
	fs.StringVarP(&a.namespace, "namespace", "n", def,
		"Namespace of the CoreDumps and agent Leases (the CoreDog controller's namespace; $"+envNamespace+" changes the default).")
	fs.BoolVarP(&a.allNamespaces, "all-namespaces", "A", false, "List CoreDumps and agents in every namespace (list, status).")
	fs.StringVar(&a.kubeconfig, "kubeconfig", "", "Path to the kubeconfig file to use.")
	names := clientcmd.RecommendedConfigOverrideFlags("")
	// -n names the namespace of the CoreDumps, not the context's namespace.
	names.ContextOverrideFlags.Namespace.LongName = ""
	clientcmd.BindOverrideFlags(&a.overrides, fs, names)
	return fs
}

func (a *app) run(ctx context.Context, args []string) error {
	globals := a.globalFlags()
	globals.SetInterspersed(false)
	globals.SetOutput(io.Discard)
	globals.Usage = func() {}
	if err := globals.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			a.usage(globals)
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	rest := globals.Args()
	if len(rest) == 0 {
		a.usage(globals)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	if rest[0] == "help" {
		if len(rest) > 1 {
			rest = []string{rest[1], "--help"}
		} else {
			a.usage(globals)
			return nil
		}
	}
	var cmd *command
	for _, c := range commands() {
		if c.name == rest[0] {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		return fmt.Errorf("%w: unknown command %q; commands: %s", errUsage, rest[0], strings.Join(commandNames(), ", "))
	}
	fs := pflag.NewFlagSet("kubectl coredog "+cmd.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	runFn := cmd.setup(fs)
	local := fs.FlagUsages()
	fs.AddFlagSet(globals)
	if err := fs.Parse(rest[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(a.stdout, "%s\n\nUsage:\n  kubectl coredog %s %s\n", cmd.help, cmd.name, cmd.args)
			if local != "" {
				fmt.Fprintf(a.stdout, "\nFlags:\n%s", local)
			}
			fmt.Fprintf(a.stdout, "\nGlobal flags: see kubectl coredog --help.\n")
			return nil
		}
		return fmt.Errorf("%w: %s: %v", errUsage, cmd.name, err)
	}
	return runFn(ctx, a, fs.Args())
}

func commandNames() []string {
	cmds := commands()
	n := make([]string, 0, len(cmds))
	for _, c := range cmds {
		n = append(n, c.name)
	}
	return n
}

func (a *app) usage(globals *pflag.FlagSet) {
	fmt.Fprint(a.stdout, `kubectl coredog — list, inspect and fetch the core dumps CoreDog captured.

Usage:
  kubectl coredog COMMAND [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(a.stdout, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(a.stdout, "\nGlobal flags (accepted by every command):\n%s", globals.FlagUsages())
	fmt.Fprintln(a.stdout, "\nRun `kubectl coredog COMMAND --help` for a command's flags and examples.")
}

// client builds the Kubernetes client once, from the kubeconfig flags.
func (a *app) client() (client.Client, error) {
	if a.c != nil {
		return a.c, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = a.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &a.overrides).ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, errors.New("no kubeconfig: set KUBECONFIG or pass --kubeconfig")
		}
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "kubectl-coredog"
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 20, 40
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	a.restCfg, a.c = cfg, c
	return c, nil
}

// listNamespace is the namespace to list in: "" with -A.
func (a *app) listNamespace() string {
	if a.allNamespaces {
		return ""
	}
	return a.namespace
}

func (a *app) noAllNamespaces(cmd string) error {
	if a.allNamespaces {
		return fmt.Errorf("%w: %s takes one CoreDump; -A/--all-namespaces only applies to list and status (name a dump as NAMESPACE/NAME instead)", errUsage, cmd)
	}
	return nil
}

// splitName accepts NAME or NAMESPACE/NAME (the form `list -A` prints).
func splitName(arg, defNamespace string) (namespace, name string) {
	if ns, n, ok := strings.Cut(arg, "/"); ok {
		return ns, n
	}
	return defNamespace, arg
}

// apiError turns the errors people meet most into what to do about them.
func apiError(err error, doing string) error {
	switch {
	case err == nil:
		return nil
	case meta.IsNoMatchError(err):
		return fmt.Errorf("%s: the CoreDog CRDs are not installed in this cluster (check --context); install CoreDog first", doing)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%s: %w; ask a cluster admin for read access to CoreDog's objects (see docs/kubectl-coredog.md)", doing, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s: the cluster did not accept your credentials; check --kubeconfig, --context and your login", doing)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// sortedKeys returns m's keys in order.
