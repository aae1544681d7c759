package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
	"github.com/strata-build/strata/lang"
)

// A workspace whose templates wait on resource jobs is built in two rounds: the
// plan lists those templates as pending (plan.Plan.Pending) with the job each
// waits on; strata builds the jobs, reads their records.jsonl from the store,
// loads the workspace again with the records (lang.WithJobRecords), and
// compiles, verifies and builds the whole plan, in which the jobs are cached.

// runResourceJobs builds the resource jobs the plan's pending templates wait
// on, with what they need, and returns what each wrote to records.jsonl, by
// job name (as lang.WithJobRecords takes it), and the build's result, which
// also comes back with its error when a job failed.
func runResourceJobs(ctx context.Context, v *plan.Verified, opts executor.Options) (map[string][]byte, *executor.BuildResult, error) {
	p := v.Plan()
	opts.Targets = p.PendingJobs()
	res, err := executor.Build(ctx, v, opts)
	if err != nil {
		return nil, res, err
	}
	records, err := readRecords(ctx, opts.Store, p, res)
	if err != nil {
		return nil, nil, err
	}
	return records, res, nil
}

// readRecords reads the records.jsonl of each job the plan's pending templates
// wait on from the tree the job gave back in res.
func readRecords(ctx context.Context, st *store.Store, p *plan.Plan, res *executor.BuildResult) (map[string][]byte, error) {
	trees := map[string]*executor.NodeResult{}
	for _, nr := range res.Nodes {
		trees[nr.ID] = nr
	}
	out := map[string][]byte{}
	for _, pt := range p.Pending {
		name := strings.TrimPrefix(pt.Job, "jobs.")
		if _, done := out[name]; done {
			continue
		}
		nr := trees[pt.Node]
		if nr == nil || nr.Tree == "" {
			return nil, fmt.Errorf("%s gave back no result to read its records from", pt.Job)
		}
		t, err := st.GetTree(ctx, nr.Tree)
		if err != nil {
			return nil, fmt.Errorf("%s: records: %w", pt.Job, err)
		}
		rec, ok := t.Lookup(plan.RecordsFile)
		if !ok || rec.Type != tree.File {
			return nil, fmt.Errorf("%s wrote no %s/%s", pt.Job, executor.JobOutPath, plan.RecordsFile)
		}
		if rec.Size > lang.MaxRecordsSize {
			return nil, fmt.Errorf("%s wrote %d bytes to %s; records are read up to %d MiB", pt.Job, rec.Size, plan.RecordsFile, lang.MaxRecordsSize>>20)
		}
		b, err := st.ReadBlob(ctx, rec.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: records: %w", pt.Job, err)
		}
		out[name] = b
	}
	return out, nil
}

// expandPlan runs the resource jobs v's pending templates wait on, then loads,
// compiles and verifies the workspace again with their records: the plan in
// which every template is expanded, with the resource build's result (for the
// build to account for what it ran). When a job failed, that result comes back
// with its error and no plan; a spec error (a record its schema refuses) has
// been reported.
func (g *globals) expandPlan(ctx context.Context, v *plan.Verified, opts executor.Options) (*plan.Verified, *executor.BuildResult, error) {
	records, res, err := runResourceJobs(ctx, v, opts)
	if err != nil {
		return nil, res, err
	}
	// Through the compile cache, keyed by the records too: a build of an
	// unchanged workspace whose jobs wrote the same records evaluates nothing.
	p, err := g.cachedPlan(ctx, records)
	if err != nil {
		return nil, nil, err
	}
	if _, quiet := opts.Runner.(cacheOnly); !quiet {
		g.noteExpanded(p)
	}
	if len(p.Pending) > 0 {
		return nil, nil, fmt.Errorf("templates.%s still waits on %s once the resource jobs ran", p.Pending[0].Template, p.Pending[0].Job)
	}
	ev, err := plan.Verify(p, plan.VerifyOptions{Host: plan.HostFingerprint(strataVersion())})
	if err != nil {
		return nil, nil, err
	}
	return ev, res, nil
}

// needsInstances reports whether building targets needs the instances of the
// plan's pending templates: every target does when there are none (the whole
// workspace), and so does a target the plan does not know (an instance's name).
func needsInstances(p *plan.Plan, targets []string) bool {
	if len(p.Pending) == 0 {
		return false
	}
	if len(targets) == 0 {
		return true
	}
	_, err := executor.ResolveTargets(p, targets)
	return err != nil
}

// planFromFile reports whether loadPlan read args[0] as a plan file: a plan
// file's pending templates cannot be expanded (it holds no CUE).
func planFromFile(args, rest []string) bool {
	return len(rest) < len(args) && strings.HasSuffix(args[0], ".json")
}

// buildExpanding builds v with opts, running the resource jobs first and
// building the expanded plan when the targets need the instances of v's
// pending templates. A plan file's pending templates stay pending.
func (g *globals) buildExpanding(ctx context.Context, v *plan.Verified, opts executor.Options, fromFile bool) (*executor.BuildResult, error) {
	p := v.Plan()
	if fromFile && len(p.Pending) > 0 {
		g.notePending(p.Pending, "a plan file keeps %s pending (strata build DIR runs the jobs first)")
	}
	if fromFile || !needsInstances(p, opts.Targets) {
		return executor.Build(ctx, v, opts)
	}
	ev, first, err := g.expandPlan(ctx, v, opts)
	if err != nil {
		return first, err
	}
	if _, err := executor.ResolveTargets(ev.Plan(), opts.Targets); err != nil {
		return nil, &usageError{err}
	}
	res, err := executor.Build(ctx, ev, opts)
	if res != nil {
		mergeRounds(first, res, ev.Plan())
	}
	return res, err
}

// mergeRounds makes the result of the second round of a build (the expanded
// plan p) account for the first (the resource jobs): a node the first round
// built is reported built, not cached as the second round found it, and one
// the second round did not reach is added, in the order of p. One
// invocation, one account of what it ran.
func mergeRounds(first, second *executor.BuildResult, p *plan.Plan) {
	if first == nil {
		return
	}
	in := map[string]*executor.NodeResult{}
	for _, n := range second.Nodes {
		in[n.ID] = n
	}
	added := false
	for _, n := range first.Nodes {
		if n.Status != executor.StatusBuilt {
			continue
		}
		switch m := in[n.ID]; {
		case m == nil:
			second.Nodes = append(second.Nodes, n)
			second.Built++
			added = true
		case m.Status == executor.StatusCached:
			*m = *n
			second.Built++
			second.Cached--
		}
	}
	if added {
		at := make(map[string]int, len(p.Nodes))
		for i, n := range p.Nodes {
			at[n.ID] = i
		}
		slices.SortStableFunc(second.Nodes, func(a, b *executor.NodeResult) int {
			return at[a.ID] - at[b.ID]
		})
	}
}

// notePending says on stderr which templates wait on which job, then what,
// whose %s is "it" or "them".
func (g *globals) notePending(pending []plan.Pending, what string) {
	if g.json() || len(pending) == 0 {
		return
	}
	var parts []string
	for _, pt := range pending {
		parts = append(parts, fmt.Sprintf("templates.%s waits on %s", pt.Template, pt.Job))
	}
	pronoun := "it"
	if len(pending) > 1 {
		pronoun = "them"
	}
	fmt.Fprintf(g.stderr, "strata: %s; %s\n", strings.Join(parts, ", "), fmt.Sprintf(what, pronoun))
}

// noteExpanded says on stderr what the templates over job resources gave.
func (g *globals) noteExpanded(p *plan.Plan) {
	if g.json() {
		return
	}
	for _, e := range p.Expanded {
		fmt.Fprintf(g.stderr, "strata: templates.%s: %d records from %s, %d instances\n", terminalSafe(e.Template), e.Records, terminalSafe(e.Job), e.Instances)
	}
}

// pendingOf lists the templates of ws that wait on a job, as the plan would.
func pendingOf(ws *lang.Workspace) []plan.Pending {
	var out []plan.Pending
	for _, name := range slices.Sorted(maps.Keys(ws.Templates)) {
		if t := ws.Templates[name]; t.Pending {
			out = append(out, plan.Pending{Template: name, Resource: t.Resource, Job: "jobs." + t.Job, Origin: t.Pos.String()})
		}
	}
	return out
}

// runExpandResources runs the resource jobs of the workspace's pending
// templates and loads it again with their records, for strata expand
// --run-resources. The jobs' progress goes to stderr.
func (g *globals) runExpandResources(ctx context.Context) (*lang.Workspace, error, error) {
	ws, specErr, err := g.loadWorkspacePartial(ctx)
	if err != nil || specErr != nil || len(pendingOf(ws)) == 0 {
		// A workspace in error is shown as far as it goes, its templates pending.
		return ws, specErr, err
	}
	p, err := compiler.Compile(ctx, ws, compiler.Options{StrataVersion: strataVersion()})
	if err != nil {
		return nil, nil, g.reportSpecError(err)
	}
	v, err := plan.Verify(p, plan.VerifyOptions{Host: plan.HostFingerprint(strataVersion())})
	if err != nil {
		return nil, nil, err
	}
	st, err := g.openStore()
	if err != nil {
		return nil, nil, err
	}
	bin, err := strataBinary()
	if err != nil {
		return nil, nil, err
	}
	r := newRenderer(g)
	records, res, err := runResourceJobs(ctx, v, executor.Options{Store: st, Binary: bin, Workspace: g.dir, Events: r.event})
	r.close()
	if err != nil {
		if res != nil && !g.json() {
			fmt.Fprintf(g.stderr, "strata: %s\n", r.summary(res))
		}
		if ctx.Err() != nil {
			return nil, nil, signalExit(ctx, err)
		}
		return nil, nil, fmt.Errorf("the resource jobs failed, so their templates are not expanded: %w", err)
	}
	return g.loadWorkspacePartial(ctx, lang.WithJobRecords(records))
}

// cacheOnly is a Runner that runs nothing: a build through it gives what the
// action cache holds and fails every other node.
type cacheOnly struct{}

var errNotBuilt = errors.New("not in the cache")

func (cacheOnly) Run(context.Context, plan.VerifiedNode, executor.Inputs) (executor.Result, error) {
	return executor.Result{}, errNotBuilt
}

// loadPlanNamed is loadPlan for commands about nodes by name (logs, explain):
// when a name is not in the plan and templates wait on resource jobs, the plan
// is expanded with the records those jobs wrote in an earlier build, from the
// store; nothing runs.
func (g *globals) loadPlanNamed(ctx context.Context, args []string) (*plan.Verified, []string, error) {
	v, rest, err := g.loadPlan(ctx, args)
	if err != nil || planFromFile(args, rest) || len(v.Plan().Pending) == 0 || len(rest) == 0 {
		return v, rest, err
	}
	_, rerr := executor.ResolveNodes(v.Plan(), rest)
	if rerr == nil {
		return v, rest, nil
	}
	st, err := g.openStore()
	if err != nil {
		return nil, nil, err
	}
	ev, res, err := g.expandPlan(ctx, v, executor.Options{Store: st, Runner: cacheOnly{}, Workspace: g.dir})
	if ev == nil && res != nil {
		pt := v.Plan().Pending[0]
		return nil, nil, &usageError{fmt.Errorf("%w; templates.%s waits on %s, whose records the store does not hold (strata build or strata test runs it)", rerr, pt.Template, pt.Job)}
	}
	if err != nil {
		return nil, nil, err
	}
	return ev, rest, nil
}
