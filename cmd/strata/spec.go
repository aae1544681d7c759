package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/sandbox"
	"github.com/strata-build/strata/lang"
)

func newVetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "vet",
		Short: "Load and validate the workspace",
		Long: `vet loads the workspace, checks it against the strata schema and each stage's
options against the schema of its type, expands templates and checks every
reference. Every error is printed as file:line:col: path: message; warnings
(such as non-hermetic "host" build roots) do not fail the command.`,
		Example: `  strata vet
  strata -C examples/fleet vet
  strata --output json vet`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return runVet(cmd.Context(), g) },
	}
}

func runVet(ctx context.Context, g *globals) error {
	ws, err := g.loadWorkspace(ctx)
	if err != nil {
		return err
	}
	// Compiling proves the plan can be made (path sources hash, keys compute).
	if _, err := compiler.Compile(ctx, ws, compiler.Options{StrataVersion: strataVersion()}); err != nil {
		return g.reportSpecError(err)
	}
	if g.json() {
		return writeJSON(g.stdout, map[string]any{
			"ok": true, "warnings": nonNil(ws.Warnings),
			"images": len(ws.Images), "jobs": len(ws.Jobs), "hooks": len(ws.Hooks),
			"templates": len(ws.Templates), "sources": len(ws.Sources),
		})
	}
	for _, w := range ws.Warnings {
		fmt.Fprintln(g.stderr, "warning: "+w.String())
	}
	g.notePending(pendingOf(ws), "strata build runs the jobs first (strata expand --run-resources shows %s expanded)")
	fmt.Fprintf(g.stdout, "ok: %d images, %d jobs, %d hooks, %d templates, %d sources\n",
		len(ws.Images), len(ws.Jobs), len(ws.Hooks), len(ws.Templates), len(ws.Sources))
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// compileFunc returns the function that loads the workspace (with the resource
// jobs' records, when there are any) and compiles it, reporting spec errors.
func (g *globals) compileFunc(records map[string][]byte) func(context.Context) (*plan.Plan, error) {
	return func(ctx context.Context) (*plan.Plan, error) {
		if g.building {
			// A changed workspace is likely to run stages: set the sandbox up
			// on the other core while CUE evaluates.
			sandbox.Prewarm()
		}
		var opts []lang.Option
		if records != nil {
			opts = append(opts, lang.WithJobRecords(records))
		}
		ws, err := g.loadWorkspace(ctx, opts...)
		if err != nil {
			return nil, err
		}
		p, err := compiler.Compile(ctx, ws, compiler.Options{StrataVersion: strataVersion()})
		if err != nil {
			return nil, g.reportSpecError(err)
		}
		return p, nil
	}
}

func newCompileCmd(g *globals) *cobra.Command {
	var (
		out     string
		noCache bool
	)
	cmd := &cobra.Command{
		Use:   "compile [-o plan.json]",
		Short: "Compile the workspace into a plan",
		Long: `compile lowers the workspace into a plan: deterministic JSON whose nodes carry a
strong key (their ID), a weak key, canonical options, input edges and the CUE
position they come from. The same workspace gives the same bytes wherever it
lives. "strata build plan.json" then does exactly what "strata build DIR" does.`,
		Example: `  strata compile -o plan.json
  strata -C examples/fleet compile | jq '.nodes | length'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The encoded plan: on a compile-cache hit the stored bytes are
			// copied to the output with no decode and encode; a damaged
			// entry (its checksum) is compiled again.
			c, err := g.compileEncoded(cmd.Context(), !noCache, nil)
			if err != nil {
				return err
			}
			if c.Hit != nil {
				if err := c.Hit.Check(); err != nil {
					g.debugf("%v", err)
					c.Close()
					// Check removed the entry: this compiles and stores.
					if c, err = g.compileEncoded(cmd.Context(), true, nil); err != nil {
						return err
					}
				}
			}
			defer c.Close()
			g.notePending(c.Pending, "the plan holds %s pending (strata build runs the jobs first)")
			write := func(w io.Writer) error { _, err := c.WriteTo(w); return err }
			if out == "" || out == "-" {
				return write(g.stdout)
			}
			if err := writeFileAtomic(out, write); err != nil {
				return err
			}
			if g.json() {
				return writeJSON(g.stdout, map[string]any{"ok": true, "plan": out, "nodes": c.Nodes, "pending": nonNil(c.Pending)})
			}
			fmt.Fprintf(g.stderr, "wrote %s (%d nodes)\n", out, c.Nodes)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the plan to this file instead of stdout")
	cmd.Flags().BoolVar(&noCache, "no-cache", false, "compile even when the compile cache holds this workspace's plan, and do not store it")
	return cmd
}

// writeFileAtomic writes a file through a temporary file and a rename, so a reader
// never sees it half written.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	// A device or pipe (-o /dev/null, -o /dev/stdout) is written in place: a
	// rename would replace it with a regular file.
	if info, err := os.Stat(path); err == nil && !info.Mode().IsRegular() && !info.IsDir() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
		return f.Close()
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func newGraphCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "graph [plan.json|DIR] [TARGET...] [--format dot|mermaid|json]",
		Short: "Print the plan as a graph",
		Long: `graph prints the plan's nodes and edges: Graphviz dot (render with
"strata graph | dot -Tsvg > plan.svg"), a Mermaid flowchart, or JSON. The plan
is the workspace's (-C DIR, or a DIR given first) or a plan file given first;
with TARGETs (as for build: images.NAME or NAME, or any node name) only they
and what they depend on are shown. A template over the records of a resource
job is drawn after that job as a pending node (dashed): its instances join
the plan when the job has run.`,
		Example: `  strata graph | dot -Tsvg > plan.svg
  strata graph --format mermaid images.base
  strata graph plan.json jobs.optical/read_sr0`,
		ValidArgsFunction: completeNodes(g),
		RunE: func(cmd *cobra.Command, a []string) error {
			if g.json() {
				format = "json"
			}
			if format != "dot" && format != "mermaid" && format != "json" {
				return &usageError{fmt.Errorf("--format must be dot, mermaid or json, not %q", format)}
			}
			v, targets, err := g.loadPlan(cmd.Context(), a)
			if err != nil {
				return err
			}
			p := v.Plan()
			var keep map[string]bool
			if len(targets) > 0 {
				ids, err := executor.ResolveTargets(p, targets)
				if err != nil {
					return &usageError{fmt.Errorf("%w%s", err, didYouMean(unknownTarget(p, targets), nodeNames(p)))}
				}
				keep = map[string]bool{}
				for _, id := range ids {
					keep[id] = true
				}
			}
			return writeGraph(g.stdout, p, format, keep)
		},
	}
	cmd.Flags().StringVar(&format, "format", "dot", "dot, mermaid or json")
	return cmd
}

// unknownTarget returns the first target no node or image answers to.
func unknownTarget(p *plan.Plan, targets []string) string {
	for _, t := range targets {
		if _, err := executor.ResolveTargets(p, []string{t}); err != nil {
			return t
		}
	}
	return ""
}

type graphNode struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Type   string `json:"type"`
	Origin string `json:"origin"`
}

type graphEdge struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// writeGraph writes the plan's nodes in keep (all when keep is nil) and the
// edges between them, and each template that waits on a resource job as a
// node of kind "pending" after that job.
func writeGraph(w io.Writer, p *plan.Plan, format string, keep map[string]bool) error {
	var nodes []graphNode
	var edges []graphEdge
	for _, n := range p.Nodes {
		if keep != nil && !keep[n.ID] {
			continue
		}
		nodes = append(nodes, graphNode{n.ID, n.Name, n.Kind, n.Type, n.Origin})
		for _, d := range n.Deps {
			edges = append(edges, graphEdge{From: d, To: n.ID})
		}
	}
	for _, pt := range p.Pending {
		if keep != nil && !keep[pt.Node] {
			continue
		}
		id := "pending:" + pt.Template
		nodes = append(nodes, graphNode{id, "templates." + pt.Template, "pending", "waits on " + pt.Job, pt.Origin})
		edges = append(edges, graphEdge{From: pt.Node, To: id})
	}
	if format == "json" {
		return writeJSON(w, map[string]any{"nodes": nonNil(nodes), "edges": nonNil(edges)})
	}
	short := map[string]string{}
	for i, n := range nodes {
		short[n.ID] = fmt.Sprintf("n%d", i)
	}
	switch format {
	case "dot":
		fmt.Fprintln(w, "digraph plan {\n  rankdir=LR;\n  node [shape=box, fontname=monospace];")
		for _, n := range nodes {
			style := ""
			if n.Kind == "pending" {
				style = ", style=dashed"
			}
			fmt.Fprintf(w, "  %s [label=%q%s];\n", short[n.ID], n.Name+"\n"+n.Type, style)
		}
		for _, e := range edges {
			fmt.Fprintf(w, "  %s -> %s;\n", short[e.From], short[e.To])
		}
		fmt.Fprintln(w, "}")
	case "mermaid":
		fmt.Fprintln(w, "flowchart LR")
		for _, n := range nodes {
			fmt.Fprintf(w, "  %s[\"%s<br/>%s\"]\n", short[n.ID], n.Name, n.Type)
		}
		for _, e := range edges {
			fmt.Fprintf(w, "  %s --> %s\n", short[e.From], short[e.To])
		}
	}
	return nil
}

func newExpandCmd(g *globals) *cobra.Command {
	var runResources bool
	cmd := &cobra.Command{
		Use:   "expand [TEMPLATE] [--run-resources]",
		Short: "Show templates, their records, the filter result and the instances",
		Long: `expand shows, for every template (or the one named), the resource it is
instantiated over, each record, whether it passed the template's if filter and,
when it did not, why (the filter and the record values it looked at), and the
images and jobs each instance defines with the template line they come from
and the record's. When other parts of the spec fail, the templates are still
shown, then the errors (exit 2).

A template over a resource a job produces ({job: NAME}) waits on that job:
expand says so, unless --run-resources, which runs the resource jobs (over
the store, as build does) and shows the expansion of the records they wrote.`,
		Example: `  strata expand
  strata expand per-device-type
  strata expand --run-resources
  strata --output json expand`,
		ValidArgsFunction: completeTemplates(g),
		Args:              args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			// The templates are shown even when other parts of the spec fail,
			// followed by the errors (exit 2).
			ws, specErr, err := g.loadWorkspacePartial(cmd.Context())
			if err == nil && specErr == nil && runResources {
				ws, specErr, err = g.runExpandResources(cmd.Context())
			}
			if err != nil {
				return err
			}
			names := slices.Sorted(maps.Keys(ws.Templates))
			if len(a) == 1 {
				if ws.Templates[a[0]] == nil {
					if specErr != nil {
						return g.reportSpecError(specErr)
					}
					return &usageError{fmt.Errorf("no template %q (templates: %s)%s", a[0], strings.Join(names, ", "), didYouMean(a[0], names))}
				}
				names = []string{a[0]}
			}
			return writeExpand(g, ws, names, specErr)
		},
	}
	cmd.Flags().BoolVar(&runResources, "run-resources", false, "run the jobs that produce resources, and expand the templates over their records")
	return cmd
}

type expandInstance struct {
	Name   string `json:"name"`
	Record int    `json:"record"`
	// RecordPos is where the record is (for a job's, its line of records.jsonl).
	RecordPos lang.Pos `json:"record_pos"`
	Origin    lang.Pos `json:"origin"`
}

type expandTemplate struct {
	*lang.Template
	Instances []expandInstance `json:"instances"`
}

func writeExpand(g *globals, ws *lang.Workspace, names []string, specErr error) error {
	var out []expandTemplate
	for _, name := range names {
		t := ws.Templates[name]
		et := expandTemplate{Template: t, Instances: []expandInstance{}}
		for _, r := range t.Records {
			for _, d := range r.Defines {
				kind, n, _ := strings.Cut(d, ".")
				var in *lang.Instance
				if kind == "images" {
					in = ws.Images[n].Instance
				} else {
					in = ws.Jobs[n].Instance
				}
				et.Instances = append(et.Instances, expandInstance{Name: d, Record: r.Index, RecordPos: in.RecordPos, Origin: in.Pos})
			}
		}
		out = append(out, et)
	}
	if g.json() {
		doc := map[string]any{"templates": nonNil(out)}
		var es lang.Errors
		if errors.As(specErr, &es) {
			doc["ok"], doc["errors"] = false, es
			writeJSON(g.stdout, doc)
			return &reportedError{code: exitBadSpec, err: specErr}
		}
		return writeJSON(g.stdout, doc)
	}
	w := g.stdout
	if len(out) == 0 {
		fmt.Fprintln(w, "no templates")
	}
	for i, t := range out {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "template %s  (%s)\n", t.Name, t.Pos)
		switch {
		case t.Pending:
			fmt.Fprintf(w, "  resource: %s (records from jobs.%s), parameter: %s\n", t.Resource, t.Job, t.Param)
		case t.Job != "":
			fmt.Fprintf(w, "  resource: %s (%d records from jobs.%s), parameter: %s\n", t.Resource, len(t.Records), t.Job, t.Param)
		default:
			fmt.Fprintf(w, "  resource: %s (%d records), parameter: %s\n", t.Resource, len(t.Records), t.Param)
		}
		if t.Filter != "" {
			fmt.Fprintf(w, "  filter:   if %s\n", t.Filter)
		}
		if t.Pending {
			fmt.Fprintf(w, "  waits on jobs.%s: its records exist once it ran (strata expand --run-resources runs it; strata build does)\n", t.Job)
			continue
		}
		passed, failed := 0, 0
		for _, r := range t.Records {
			switch {
			case len(r.Errors) > 0:
				failed++
			case r.Passed:
				passed++
			}
		}
		if failed > 0 {
			fmt.Fprintf(w, "  records:  %d passed, %d skipped, %d in error\n", passed, len(t.Records)-passed-failed, failed)
		} else {
			fmt.Fprintf(w, "  records:  %d passed, %d skipped\n", passed, len(t.Records)-passed)
		}
		for _, r := range t.Records {
			switch {
			case len(r.Errors) > 0:
				fmt.Fprintf(w, "    [%d] error %s\n", r.Index, r.Record)
				for _, e := range r.Errors {
					fmt.Fprintf(w, "          %s\n", e)
				}
			case r.Passed:
				fmt.Fprintf(w, "    [%d] pass  %s\n", r.Index, r.Record)
			default:
				fmt.Fprintf(w, "    [%d] skip  %s\n          %s\n", r.Index, r.Record, r.Reason)
			}
		}
		fmt.Fprintf(w, "  instances: %d\n", len(t.Instances))
		for _, in := range t.Instances {
			fmt.Fprintf(w, "    %s  from record %d (%s) at %s\n", in.Name, in.Record, in.RecordPos, in.Origin)
		}
	}
	if specErr != nil {
		return g.reportSpecError(specErr)
	}
	return nil
}

func newStagesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stages [TYPE]",
		Short: "List stage types: built-ins and the workspace's own modules",
		Long: `stages lists every stage type the workspace can use: its name, whether it is
built in, its implementation digest (part of every key that uses it) and its
docs. With a TYPE, it also prints the type's option schema in CUE.
Outside a workspace it lists the built-ins only.`,
		Example: `  strata stages
  strata stages strata.files
  strata -C examples/fleet stages acme.motd`,
		ValidArgsFunction: completeStageTypes(g),
		Args:              args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			mods, err := g.stageModules(cmd.Context())
			if err != nil {
				return err
			}
			if len(a) == 1 {
				var found []*plan.Module
				for _, m := range mods {
					if m.Name == a[0] {
						found = append(found, m)
					}
				}
				if len(found) == 0 {
					var names []string
					for _, m := range mods {
						names = append(names, m.Name)
					}
					return &usageError{fmt.Errorf("unknown stage type %q (known: %s)%s", a[0], strings.Join(names, ", "), didYouMean(a[0], names))}
				}
				mods = found
			}
			if g.json() {
				return writeJSON(g.stdout, map[string]any{"stages": mods})
			}
			for _, m := range mods {
				kind := "user"
				if m.Builtin {
					kind = "builtin"
				}
				fmt.Fprintf(g.stdout, "%-20s %-8s %s  %s\n", m.Name, kind, m.Digest[:12], m.Doc)
				if len(a) == 1 {
					fmt.Fprintf(g.stdout, "\noptions: %s\n", m.Schema)
				}
			}
			return nil
		},
	}
}

// stageModules lists the workspace's stage types, or the built-ins alone when the
// directory is not a workspace.
func (g *globals) stageModules(ctx context.Context) ([]*plan.Module, error) {
	ws, err := lang.Builtins(ctx)
	if _, serr := os.Stat(filepath.Join(g.dir, "cue.mod", "module.cue")); serr == nil {
		ws, err = g.loadWorkspace(ctx)
	}
	if err != nil {
		return nil, err
	}
	return compiler.Modules(ws)
}
