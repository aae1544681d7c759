package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/compiler/plan"
)

// examples are the Example sections of the commands defined outside this file's
// reach (build.go, cache.go, doctor.go); every command's help has one (a test
// checks).
var examples = map[string]string{
	"strata build": `  strata build                          # every image of the workspace in .
  strata -C fleet build images.base -j 4
  strata compile -o plan.json && strata build plan.json
  strata build --explain --keep-going`,
	"strata explain": `  strata explain images.base.stages[2]
  strata explain plan.json images.base`,
	"strata logs": `  strata logs images.base.stages[0]
  strata logs hooks.lint
  strata --output json logs jobs.smoke-test`,
	"strata cache": `  strata cache ls
  strata cache gc --max-size 20GiB
  strata cache verify`,
	"strata cache ls": `  strata cache ls
  strata --output json cache ls`,
	"strata cache gc": `  strata cache gc --max-size 20GiB
  strata cache gc --max-size 0          # drop every entry`,
	"strata cache verify": `  strata cache verify`,
	"strata doctor": `  strata doctor
  strata --output json doctor`,
}

// setExamples gives each command without an Example the one from examples.
func setExamples(c *cobra.Command) {
	if ex, ok := examples[c.CommandPath()]; ok && c.Example == "" {
		c.Example = ex
	}
	for _, sub := range c.Commands() {
		setExamples(sub)
	}
}

// groupCommands makes each command that only groups subcommands (strata,
// strata mod, strata cache) refuse an unknown subcommand as a usage error
// (exit 2), instead of printing its help and exiting 0, and print its help when
// given none.
func groupCommands(c *cobra.Command) {
	if c.HasSubCommands() && !c.Runnable() || c.Parent() == nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if len(a) == 0 {
				return nil
			}
			var names []string
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, sub.Name())
				}
			}
			return &usageError{fmt.Errorf("unknown command %q for %q%s (see %s --help)", a[0], cmd.CommandPath(), didYouMean(a[0], names), cmd.CommandPath())}
		}
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	for _, sub := range c.Commands() {
		groupCommands(sub)
	}
}

func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "help [COMMAND]",
		Short:   "Help about any command",
		Example: "  strata help build\n  strata build --help",
		Args:    args(cobra.ArbitraryArgs),
		RunE: func(cmd *cobra.Command, a []string) error {
			root := cmd.Root()
			c, rest, err := root.Find(a)
			if err != nil || c == nil || len(rest) > 0 {
				return &usageError{fmt.Errorf("unknown help topic %q (see strata --help)", strings.Join(a, " "))}
			}
			return c.Help()
		},
		ValidArgsFunction: func(cmd *cobra.Command, a []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			var out []string
			c, _, err := cmd.Root().Find(a)
			if err != nil || c == nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			for _, sub := range c.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, sub.Name()+"\t"+sub.Short)
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

func newCompletionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `completion prints a script that completes strata's commands and flags, node
names (images.NAME, jobs.NAME, hooks.NAME and every node of the workspace's
plan) where a command takes them, template names for expand and stage types
for stages. Names come from the workspace (-C DIR) or the plan file given first.`,
		Example: `  source <(strata completion bash)
  strata completion zsh > "${fpath[1]}/_strata"
  strata completion fish > ~/.config/fish/completions/strata.fish`,
	}
	for _, sh := range []struct {
		name, example string
		write         func(root *cobra.Command, w io.Writer) error
	}{
		{"bash", "  source <(strata completion bash)", func(r *cobra.Command, w io.Writer) error { return r.GenBashCompletionV2(w, true) }},
		{"zsh", `  strata completion zsh > "${fpath[1]}/_strata"`, func(r *cobra.Command, w io.Writer) error { return r.GenZshCompletion(w) }},
		{"fish", "  strata completion fish > ~/.config/fish/completions/strata.fish", func(r *cobra.Command, w io.Writer) error { return r.GenFishCompletion(w, true) }},
		{"powershell", "  strata completion powershell | Out-String | Invoke-Expression", func(r *cobra.Command, w io.Writer) error { return r.GenPowerShellCompletionWithDesc(w) }},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:     sh.name,
			Short:   "Print the " + sh.name + " completion script",
			Example: sh.example,
			Args:    args(cobra.NoArgs),
			RunE: func(c *cobra.Command, _ []string) error {
				return sh.write(c.Root(), c.OutOrStdout())
			},
		})
	}
	return cmd
}

// completeNodes completes a command's arguments with node names: with no
// argument yet, a plan file or workspace directory may come first, so files are
// offered when no node name matches.
func completeNodes(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, a []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		p := g.quietPlan(cmd.Context(), a)
		if p == nil {
			return nil, cobra.ShellCompDirectiveDefault
		}
		var out []string
		for _, n := range nodeNames(p) {
			if strings.HasPrefix(n, toComplete) {
				out = append(out, n)
			}
		}
		if len(out) == 0 && len(a) == 0 {
			return nil, cobra.ShellCompDirectiveDefault
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// nodeNames are the names a plan answers to: images.NAME, and every node's
// name and aliases, sorted.
func nodeNames(p *plan.Plan) []string {
	set := map[string]bool{}
	for name := range p.Images {
		set["images."+name] = true
	}
	for _, n := range p.Nodes {
		set[n.Name] = true
		for _, a := range n.Aliases {
			set[a.Name] = true
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// quietPlan is the plan a completion reads: the plan file or workspace
// directory given first, else the workspace; nil when there is none. It prints
// nothing: the shell reads what a completion writes.
func (g *globals) quietPlan(ctx context.Context, a []string) *plan.Plan {
	q := *g
	q.stdout, q.stderr, q.verbose, q.output = io.Discard, io.Discard, false, "text"
	if len(a) > 0 && strings.HasSuffix(a[0], ".json") {
		f, err := os.Open(a[0])
		if err != nil {
			return nil
		}
		defer f.Close()
		p, err := plan.Decode(f)
		if err != nil {
			return nil
		}
		return p
	}
	if len(a) > 0 && isWorkspaceDir(a[0]) {
		q.dir = a[0]
	}
	p, err := q.cachedPlan(ctx, nil)
	if err != nil {
		return nil
	}
	return p
}

// completeStageTypes completes a stage type.
func completeStageTypes(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, a []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(a) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		q := *g
		q.stdout, q.stderr = io.Discard, io.Discard
		mods, err := q.stageModules(cmd.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, m := range mods {
			if strings.HasPrefix(m.Name, toComplete) {
				c := m.Name
				if m.Doc != "" {
					c += "\t" + m.Doc
				}
				out = append(out, c)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeTemplates completes a template name.
func completeTemplates(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, a []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(a) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		q := *g
		q.stdout, q.stderr = io.Discard, io.Discard
		ws, _, err := q.loadWorkspacePartial(cmd.Context())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, name := range slices.Sorted(maps.Keys(ws.Templates)) {
			if strings.HasPrefix(name, toComplete) {
				out = append(out, name)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
