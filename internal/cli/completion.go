package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// Shells `kubectl coredog completion` writes a script for.
var completionShells = []string{"bash", "zsh", "fish"}

func completionCommand() command {
	return command{
		name:    "completion",
		args:    "bash|zsh|fish",
		summary: "Print a shell completion script (commands and flags).",
		help: `Print a completion script for bash, zsh or fish: the commands and each
command's flags, for kubectl-coredog run by that name (kubectl's own
completion of "kubectl coredog ..." needs a kubectl_complete-coredog program,
which this is not).

Examples:
  source <(kubectl coredog completion bash)
  kubectl coredog completion zsh > "${fpath[1]}/_kubectl-coredog"
  kubectl coredog completion fish > ~/.config/fish/completions/kubectl-coredog.fish`,
		setup: func(*pflag.FlagSet) func(context.Context, *app, []string) error {
			return func(_ context.Context, a *app, args []string) error {
				if len(args) != 1 || !slices.Contains(completionShells, args[0]) {
					return fmt.Errorf("%w: completion takes one of %s", errUsage, strings.Join(completionShells, ", "))
				}
				return writeCompletion(a.stdout, args[0], a.completionWords())
			}
		},
	}
}

// completionWords are the commands, each with its flags (global flags
// under ""), long forms with their dashes.
func (a *app) completionWords() map[string][]string {
	flagsOf := func(fs *pflag.FlagSet) []string {
		var out []string
		fs.VisitAll(func(f *pflag.Flag) {
			out = append(out, "--"+f.Name)
			if f.Shorthand != "" {
				out = append(out, "-"+f.Shorthand)
			}
		})
		return out
	}
	words := map[string][]string{"": flagsOf(a.globalFlags())}
	for _, c := range commands() {
		fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
		c.setup(fs)
		words[c.name] = append(flagsOf(fs), "--help")
	}
	words["completion"] = append(words["completion"], completionShells...)
	return words
}

func writeCompletion(w io.Writer, shell string, words map[string][]string) error {
	names := make([]string, 0, len(words))
	for n := range words {
		if n != "" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var b strings.Builder
	switch shell {
	case "bash":
		b.WriteString("# bash completion for kubectl-coredog (kubectl coredog completion bash)\n")
		b.WriteString("_kubectl_coredog() {\n  local cur cmd i\n  cur=\"${COMP_WORDS[COMP_CWORD]}\"\n  cmd=\"\"\n")
		// The command is the first word that names one (flag values are skipped).
		fmt.Fprintf(&b, "  for ((i = 1; i < COMP_CWORD; i++)); do\n    case \" %s \" in\n      *\" ${COMP_WORDS[i]} \"*) cmd=\"${COMP_WORDS[i]}\"; break ;;\n    esac\n  done\n",
			strings.Join(names, " "))
		b.WriteString("  local words\n  case \"$cmd\" in\n")
		fmt.Fprintf(&b, "    \"\") words=%q ;;\n", strings.Join(append(slices.Clone(names), words[""]...), " "))
		for _, n := range names {
			fmt.Fprintf(&b, "    %s) words=%q ;;\n", n, strings.Join(append(slices.Clone(words[n]), words[""]...), " "))
		}
		b.WriteString("  esac\n  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n}\n")
		b.WriteString("complete -F _kubectl_coredog kubectl-coredog\n")
	case "zsh":
		b.WriteString("#compdef kubectl-coredog\n# zsh completion for kubectl-coredog (kubectl coredog completion zsh)\n")
		fmt.Fprintf(&b, "_kubectl_coredog() {\n  local -a cmds opts\n  cmds=(%s)\n  local cmd w\n", strings.Join(names, " "))
		b.WriteString("  for w in ${words[2,CURRENT-1]}; do\n    if (( ${cmds[(Ie)$w]} )); then cmd=$w; break; fi\n  done\n  if [[ -z $cmd ]]; then\n")
		fmt.Fprintf(&b, "    opts=(%s)\n", strings.Join(append(slices.Clone(names), words[""]...), " "))
		b.WriteString("  else\n    case $cmd in\n")
		for _, n := range names {
			fmt.Fprintf(&b, "      %s) opts=(%s) ;;\n", n, strings.Join(append(slices.Clone(words[n]), words[""]...), " "))
		}
		b.WriteString("    esac\n  fi\n  compadd -- $opts\n}\ncompdef _kubectl_coredog kubectl-coredog\n")
	case "fish":
		b.WriteString("# fish completion for kubectl-coredog (kubectl coredog completion fish)\n")
		fmt.Fprintf(&b, "complete -c kubectl-coredog -f -n '__fish_use_subcommand' -a '%s'\n", strings.Join(names, " "))
		for _, n := range names {
			for _, f := range words[n] {
				if long, ok := strings.CutPrefix(f, "--"); ok {
					fmt.Fprintf(&b, "complete -c kubectl-coredog -f -n '__fish_seen_subcommand_from %s' -l %s\n", n, long)
				} else if !strings.HasPrefix(f, "-") {
					fmt.Fprintf(&b, "complete -c kubectl-coredog -f -n '__fish_seen_subcommand_from %s' -a %s\n", n, f)
				}
			}
		}
		for _, f := range words[""] {
			if long, ok := strings.CutPrefix(f, "--"); ok {
				fmt.Fprintf(&b, "complete -c kubectl-coredog -f -l %s\n", long)
			}
		}
	default:
		return fmt.Errorf("%w: no completion for shell %q", errUsage, shell)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
