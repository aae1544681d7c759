package executor

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/sandbox"
	"github.com/strata-build/strata/executor/store"
)

// builder holds the state of one Build.
type builder struct {
	opts Options
	plan *plan.Plan
	ev   *emitter
	euid int
	egid int

	tasks   map[string]*task
	display map[string]string // node ID → the alias a target asked for

	checked sync.Map // tree digest → *onceErr: checkouts hashed for assemblers

	// Set by exportAll.
	outDir    string
	artifacts []Artifact
	stale     []string

	hostOnce sync.Once
	host     *sandbox.Host
	hostErr  error
}

// sandboxHost returns Options.Host, or detects it the first time a node must run:
// probing bwrap, namespaces and overlayfs costs ~30 ms, which a fully cached
// build should not pay.
// The probes' results are kept in the store (sandbox.DetectCached), so a build
// after the first skips them. The first node to run also says, once, when stages cannot have copy-on-write
// staging.
func (b *builder) sandboxHost(ctx context.Context, t *task) (*sandbox.Host, error) {
	b.hostOnce.Do(func() {
		if b.host = b.opts.Host; b.host == nil {
			if b.host, b.hostErr = sandbox.DetectCached(ctx, b.hostCache()); b.hostErr != nil {
				b.hostErr = fmt.Errorf("sandbox: %w (see strata doctor)", b.hostErr)
				return
			}
		}
		if b.host.Staging == sandbox.StagingCopy {
			ev := b.event(t, EventWarning)
			ev.Line = "overlayfs is unavailable here: each stage gets a full copy of its input tree, which is slower (see strata doctor)"
			if b.host.Overlay {
				ev.Line = "copy staging (" + sandbox.StagingEnv + "=copy): each stage gets a full copy of its input tree, which is slower"
			}
			b.ev.emit(ev)
		}
	})
	return b.host, b.hostErr
}

// task is one node of the build.
type task struct {
	n          *plan.Node
	name       string // the node's name as the build shows it (see displayNames)
	idx        int    // position in the build, 1-based
	rank       int
	waiting    int // unfinished dependencies
	dependents []*task
	blocked    error // set when a dependency failed or was skipped
	finished   bool

	// Set by the node's goroutine before it reports; read by dependents after.
	res    *NodeResult
	action *store.Action
	err    error
}

func isCleanup(n *plan.Node) bool { return n.Kind == plan.KindHook && n.Type == "cleanup" }

// rank orders ready nodes: fetch, build, outputs, then jobs and hooks, then publish.
func rank(kind string) int {
	switch kind {
	case plan.KindSource:
		return 0
	case plan.KindStage:
		return 1
	case plan.KindOutput:
		return 2
	case plan.KindJob, plan.KindHook:
		return 3
	}
	return 4
}

type readyQueue []*task

func (q readyQueue) Len() int { return len(q) }
func (q readyQueue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].idx < q[j].idx
}
func (q readyQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *readyQueue) Push(x any)   { *q = append(*q, x.(*task)) }
func (q *readyQueue) Pop() any {
	old := *q
	t := old[len(old)-1]
	*q = old[:len(old)-1]
	return t
}

func (b *builder) event(t *task, kind EventKind) Event {
	return Event{Node: t.n.ID, Name: t.name, NodeKind: t.n.Kind, Type: t.n.Type, Kind: kind}
}

func (b *builder) run(ctx context.Context, ids []string) (*Result, error) {
	b.tasks = make(map[string]*task, len(ids))
	order := make([]*task, 0, len(ids))
	byID := make(map[string]*plan.Node, len(b.plan.Nodes))
	for _, n := range b.plan.Nodes {
		byID[n.ID] = n
	}
	for i, id := range ids {
		n := byID[id]
		t := &task{n: n, name: n.Name, idx: i + 1, rank: rank(n.Kind)}
		if d, ok := b.display[id]; ok {
			t.name = d
		}
		b.tasks[id] = t
		order = append(order, t)
	}
	ready := &readyQueue{}
	// Cleanup hooks wait for everything else and run whatever happened to it
	// (but not after Ctrl-C): they are the build's last step, not nodes that a
	// failed dependency skips.
	var cleanup []*task
	for _, t := range order {
		if isCleanup(t.n) {
			cleanup = append(cleanup, t)
			b.ev.emit(b.event(t, EventQueued))
			continue
		}
		for _, d := range t.n.Deps {
			if dt, ok := b.tasks[d]; ok {
				t.waiting++
				dt.dependents = append(dt.dependents, t)
			}
		}
		b.ev.emit(b.event(t, EventQueued))
		if t.waiting == 0 {
			heap.Push(ready, t)
		}
	}

	results := make(chan *task)
	running := 0
	stopped, inCleanup := false, false
	var failed []*NodeError
	var finish func(t *task)
	finish = func(t *task) {
		t.finished = true
		if t.res == nil {
			t.res = &NodeResult{ID: t.n.ID, Name: t.name, Kind: t.n.Kind, Type: t.n.Type, Status: StatusSkipped}
		}
		var ne *NodeError
		if t.err != nil && errors.As(t.err, &ne) {
			failed = append(failed, ne)
			if !b.opts.KeepGoing {
				stopped = true
			}
		}
		ok := t.err == nil && t.res.Status != StatusSkipped
		for _, d := range t.dependents {
			d.waiting--
			if !ok && d.blocked == nil {
				d.blocked = fmt.Errorf("%w: %s", ErrDependencyFailed, t.name)
			}
			if d.waiting == 0 && !d.finished {
				if d.blocked != nil {
					b.skip(d, d.blocked)
					finish(d)
				} else {
					heap.Push(ready, d)
				}
			}
		}
	}
	for {
		if ctx.Err() != nil {
			stopped = true
		}
		for (!stopped || inCleanup) && running < b.opts.Jobs && ready.Len() > 0 {
			t := heap.Pop(ready).(*task)
			running++
			go func() {
				t.res, t.action, t.err = b.runNode(ctx, t)
				results <- t
			}()
		}
		if running == 0 && ready.Len() == 0 && len(cleanup) > 0 && ctx.Err() == nil {
			for _, t := range cleanup {
				heap.Push(ready, t)
			}
			cleanup, inCleanup = nil, true
			continue
		}
		if running == 0 {
			break
		}
		t := <-results
		running--
		finish(t)
	}
	// Whatever did not run was stopped by a failure or by cancellation.
	reason := ErrStopped
	if ctx.Err() != nil {
		reason = fmt.Errorf("%w: %w", ErrStopped, context.Cause(ctx))
	}
	for _, t := range order {
		if !t.finished {
			b.skip(t, reason)
			t.finished = true
		}
	}

	if ctx.Err() == nil {
		failed = append(failed, b.exportAll(ctx)...)
	}
	res := &Result{OutDir: b.outDir, Artifacts: b.artifacts, Stale: b.stale}
	for _, t := range order {
		res.Nodes = append(res.Nodes, t.res)
		switch t.res.Status {
		case StatusBuilt:
			res.Built++
		case StatusCached:
			res.Cached++
		case StatusFailed:
			res.Failed++
		default:
			res.Skipped++
		}
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("build cancelled: %w", err)
	}
	if len(failed) > 0 {
		sort.SliceStable(failed, func(i, j int) bool { return b.tasks[failed[i].ID].idx < b.tasks[failed[j].ID].idx })
		return res, &BuildError{Failed: failed}
	}
	return res, nil
}

// inputTrees are the trees of n's finished dependencies that it was built
// from: input tree, build root and mounted inputs.
func (b *builder) inputTrees(n *plan.Node) []digest.Digest {
	var out []digest.Digest
	add := func(id string) {
		if t, ok := b.tasks[id]; ok && t.action != nil && t.action.Tree != "" {
			out = append(out, t.action.Tree)
		}
	}
	add(n.Inputs.Tree)
	add(n.Inputs.BuildRoot)
	for _, id := range n.Inputs.Mounts {
		add(id)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// skip records t as skipped for reason.
func (b *builder) skip(t *task, reason error) {
	t.res = &NodeResult{ID: t.n.ID, Name: t.name, Kind: t.n.Kind, Type: t.n.Type, Status: StatusSkipped, Reason: reason.Error()}
	ev := b.event(t, EventSkipped)
	ev.Err = reason
	b.ev.emit(ev)
}

// dep returns the finished dependency id of the current build with its action.
func (b *builder) dep(id string) (*task, error) {
	t, ok := b.tasks[id]
	if !ok || t.action == nil {
		return nil, fmt.Errorf("internal: dependency %s has no result", id)
	}
	return t, nil
}

// runNode runs one node and reports its events. It returns the node's result,
// its action (nil for hooks and skipped nodes) and a *NodeError on failure.
func (b *builder) runNode(ctx context.Context, t *task) (*NodeResult, *store.Action, error) {
	n := t.n
	res := &NodeResult{ID: n.ID, Name: t.name, Kind: n.Kind, Type: n.Type}
	start := time.Now()
	fail := func(err error, exit int, log string) (*NodeResult, *store.Action, error) {
		res.Status = StatusFailed
		res.Elapsed = Duration(time.Since(start))
		ne := &NodeError{Node: t.name, ID: n.ID, Origin: n.Origin, ExitCode: exit, Log: log, Err: err}
		var xe *exitError
		if errors.As(err, &xe) {
			ne.Err, ne.ExitCode = nil, xe.code
		}
		if ctx.Err() != nil {
			// A cancelled build is not a node failure.
			res.Status = StatusSkipped
			res.Reason = fmt.Sprintf("%v: %v", ErrStopped, context.Cause(ctx))
			ev := b.event(t, EventSkipped)
			ev.Err = fmt.Errorf("%w: %w", ErrStopped, context.Cause(ctx))
			b.ev.emit(ev)
			return res, nil, ctx.Err()
		}
		ev := b.event(t, EventFailed)
		ev.Err, ev.Elapsed = ne, res.Elapsed
		b.ev.emit(ev)
		return res, nil, ne
	}

	switch n.Kind {
	case plan.KindPublish:
		res.Status, res.Reason = StatusSkipped, ErrNotImplemented.Error()
		ev := b.event(t, EventSkipped)
		ev.Err = ErrNotImplemented
		b.ev.emit(ev)
		return res, nil, nil
	case plan.KindHook:
		if n.Type != "cleanup" {
			break // cached by key like a job: same command, same outputs
		}
		// Cleanup hooks release what a build took: they run every time.
		b.ev.emit(b.event(t, EventStarted))
		out, err := b.runHook(ctx, t)
		if err != nil {
			return fail(err, out.exit, out.tail)
		}
		res.Status, res.Log, res.Elapsed = StatusBuilt, out.log, Duration(time.Since(start))
		ev := b.event(t, EventDone)
		ev.Elapsed = res.Elapsed
		b.ev.emit(ev)
		return res, &store.Action{Key: n.ID, Log: out.log}, nil
	}

	cached := func(a *store.Action) (*NodeResult, *store.Action, error) {
		if w := readMeta(a).Warning; w != "" {
			ev := b.event(t, EventWarning)
			ev.Line = w
			b.ev.emit(ev)
		}
		res.Status, res.Tree, res.Outputs, res.Log = StatusCached, a.Tree, a.Outputs, a.Log
		res.Elapsed = Duration(time.Since(start))
		b.ev.emit(b.event(t, EventCached))
		return res, a, nil
	}
	st := b.opts.Store
	a, err := st.GetAction(ctx, n.ID)
	if err == nil {
		return cached(a)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return fail(err, -1, "")
	}
	release, err := st.LockKeyWaiting(ctx, n.ID, func(holder int) {
		ev := b.event(t, EventWaiting)
		ev.Line = "waiting for another strata process building it"
		if holder > 0 {
			ev.Line = fmt.Sprintf("waiting for another strata process (pid %d) building it", holder)
		}
		b.ev.emit(ev)
	})
	if err != nil {
		return fail(err, -1, "")
	}
	defer release()
	if a, err := st.GetAction(ctx, n.ID); err == nil {
		return cached(a) // another process built it while we waited
	}
	if b.opts.Explain {
		if ex, err := Explain(ctx, st, b.plan.Host, n); err == nil {
			ev := b.event(t, EventExplain)
			ev.Line = ex.String()
			b.ev.emit(ev)
		}
	}
	b.ev.emit(b.event(t, EventStarted))
	var out nodeOutput
	switch n.Kind {
	case plan.KindSource:
		out, err = b.runSource(ctx, t)
	case plan.KindStage:
		out, err = b.runStage(ctx, t)
	case plan.KindOutput:
		out, err = b.runOutput(ctx, t)
	case plan.KindJob:
		out, err = b.runJob(ctx, t)
	case plan.KindHook:
		out, err = b.runHook(ctx, t)
	default:
		err = fmt.Errorf("unknown node kind %q", n.Kind)
	}
	if err != nil {
		if out.log != "" {
			// Keep the log of a failed node for "strata logs".
			_ = putNodeLog(ctx, st, n.ID, out.log)
		}
		return fail(err, out.exit, out.tail)
	}
	out.meta.Name = n.Name
	a = &store.Action{Key: n.ID, WeakKey: n.WeakKey, Tree: out.tree, Log: out.log, Outputs: out.outputs,
		Inputs: b.inputTrees(n), Meta: mustJSON(out.meta)}
	if err := st.PutAction(ctx, a); err != nil {
		return fail(err, -1, "")
	}
	if n.WeakKey != "" {
		if err := putWeak(ctx, st, b.plan.Host, n, a); err != nil {
			return fail(err, -1, "")
		}
	}
	res.Status, res.Tree, res.Outputs, res.Log = StatusBuilt, a.Tree, a.Outputs, a.Log
	res.Elapsed = Duration(time.Since(start))
	ev := b.event(t, EventDone)
	ev.Elapsed = res.Elapsed
	b.ev.emit(ev)
	return res, a, nil
}

// hostCache is the file where the sandbox probes' results are kept.
func (b *builder) hostCache() string { return filepath.Join(b.opts.Store.Dir(), "host.json") }
