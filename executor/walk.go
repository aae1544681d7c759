package executor

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/compiler/plan"
)

// Dispatcher runs one ready node, all of whose dependencies succeeded, given
// their results, and returns the node's own. The local dispatcher runs it here
// through the action cache; a remote one hands it to a worker. The walker calls
// it from up to Jobs goroutines at once. An error wrapping ErrNotImplemented
// marks the node skipped rather than failed.
type Dispatcher interface {
	Dispatch(ctx context.Context, n plan.VerifiedNode, in Inputs) (Result, error)
}

// errUnverified is the error of a runner or dispatcher handed the zero
// VerifiedNode.
var errUnverified = errors.New("a node not from a verified plan")

// walkOptions configure walk.
type walkOptions struct {
	// Jobs bounds the nodes dispatched at once (> 0).
	Jobs int
	// KeepGoing keeps dispatching nodes that do not depend on a failed one.
	KeepGoing bool
	// Names are the names the build shows for nodes (see displayNames).
	Names map[string]string
	// Events receives queued, cached, done, failed and skipped events.
	Events *emitter
	// Finished, when set, is called with each node dispatched or skipped as
	// it finishes, on the walk's goroutine (not for nodes left unfinished by
	// a failure or a cancellation).
	Finished func(*task)
}

// task is one node of a walk.
type task struct {
	vn         plan.VerifiedNode
	n          *plan.Node // vn.Node()
	name       string     // the node's name as the build shows it
	idx        int        // position in the walk, 1-based
	rank       int
	waiting    int // unfinished dependencies
	dependents []*task
	blocked    error // set when a dependency failed or was skipped
	finished   bool

	// Set by the node's goroutine before it reports; read by dependents after.
	res    *NodeResult
	result Result
	ok     bool // result is usable by dependents
	err    error
}

// walk runs the nodes ids of v (in plan order, closed under dependencies) in
// dependency order through d: ready nodes by rank (fetch, build, outputs, jobs
// and hooks, publish), then plan order; at most o.Jobs at a time. A failed
// node's dependents are skipped; without KeepGoing no node starts after the
// first failure. Cleanup hooks wait for every other node and then run whatever
// happened, except after cancellation. Every node is dispatched at most once.
// It returns the tasks in plan order and the node errors in that order.
// CleanupGrace bounds the cleanup hooks of a cancelled build: they still run
// (they release what the build took), but a second Ctrl-C reaches no one.
const CleanupGrace = time.Minute

func walk(ctx context.Context, v *plan.Verified, ids []string, d Dispatcher, o walkOptions) ([]*task, []*NodeError) {
	tasks := make(map[string]*task, len(ids))
	order := make([]*task, 0, len(ids))
	for i, id := range ids {
		vn, _ := v.Node(id)
		n := vn.Node()
		t := &task{vn: vn, n: n, name: n.Name, idx: i + 1, rank: rank(n.Kind)}
		if name, ok := o.Names[id]; ok {
			t.name = name
		}
		tasks[id] = t
		order = append(order, t)
	}
	ready := &readyQueue{}
	// Pre-build hooks run first and everything else waits for them; cleanup
	// hooks wait for everything and run last.
	var preBuild, held, cleanup []*task
	for _, t := range order {
		if isPreBuild(t.n) {
			preBuild = append(preBuild, t)
		}
	}
	for _, t := range order {
		o.Events.emit(taskEvent(t, EventQueued))
		if isCleanup(t.n) {
			cleanup = append(cleanup, t)
			continue
		}
		for _, dep := range t.n.Deps {
			if dt, ok := tasks[dep]; ok && !isCleanup(dt.n) {
				t.waiting++
				dt.dependents = append(dt.dependents, t)
			}
		}
		switch {
		case t.waiting > 0:
		case len(preBuild) > 0 && !isPreBuild(t.n):
			held = append(held, t)
		default:
			heap.Push(ready, t)
		}
	}

	pending := len(preBuild)
	release := func(t *task) {
		// A node held for the pre-build hooks, or that became ready while
		// they ran.
		if pending > 0 {
			held = append(held, t)
			return
		}
		heap.Push(ready, t)
	}
	results := make(chan *task)
	running := 0
	var cleanupCtx context.Context
	stopped, inCleanup := false, false
	var failed []*NodeError
	var finish func(t *task)
	finish = func(t *task) {
		t.finished = true
		if o.Finished != nil {
			defer o.Finished(t)
		}
		var ne *NodeError
		if t.err != nil && errors.As(t.err, &ne) {
			failed = append(failed, ne)
			if !o.KeepGoing {
				stopped = true
			}
		}
		for _, dt := range t.dependents {
			dt.waiting--
			switch {
			case t.ok || dt.blocked != nil:
			case ctx.Err() != nil:
				// Interrupted, not failed: nothing of it is a failure to report.
				dt.blocked = fmt.Errorf("%w: %w", ErrStopped, context.Cause(ctx))
			default:
				dt.blocked = fmt.Errorf("%w: %s", ErrDependencyFailed, t.name)
			}
			if dt.waiting == 0 && !dt.finished {
				if dt.blocked != nil {
					skipTask(dt, dt.blocked, o.Events)
					finish(dt)
				} else {
					release(dt)
				}
			}
		}
	}
	for {
		if ctx.Err() != nil {
			stopped = true
		}
		for (!stopped || inCleanup) && running < o.Jobs && ready.Len() > 0 {
			t := heap.Pop(ready).(*task)
			running++
			dctx := ctx
			if inCleanup && ctx.Err() != nil {
				dctx = cleanupCtx
			}
			go func() {
				dispatchTask(dctx, t, tasks, d, o.Events)
				results <- t
			}()
		}
		if running == 0 && len(cleanup) > 0 && (ready.Len() == 0 || stopped) {
			// Cleanup hooks run last, whatever happened (they release what
			// the build took: a lab's lease, a signing key): after a failure
			// that stopped the build, what was still queued stays unrun; after
			// a cancellation they run on a context of their own, for at most
			// CleanupGrace.
			if ctx.Err() != nil {
				var cancel context.CancelFunc
				cleanupCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), CleanupGrace)
				defer cancel()
			}
			ready = &readyQueue{}
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
		if isPreBuild(t.n) {
			pending--
			if !t.ok {
				for _, h := range held {
					h.blocked = fmt.Errorf("%w: pre-build hook %s", ErrDependencyFailed, t.name)
				}
			}
			if pending == 0 {
				for _, h := range held {
					if h.blocked != nil {
						skipTask(h, h.blocked, o.Events)
						finish(h)
					} else {
						heap.Push(ready, h)
					}
				}
				held = nil
			}
		}
	}
	// Whatever did not run was stopped by a failure or by cancellation.
	reason := ErrStopped
	if ctx.Err() != nil {
		reason = fmt.Errorf("%w: %w", ErrStopped, context.Cause(ctx))
	}
	for _, t := range order {
		if !t.finished {
			skipTask(t, reason, o.Events)
			t.finished = true
		}
	}
	return order, failed
}

// dispatchTask dispatches t with the results of its finished dependencies and
// records what happened.
func dispatchTask(ctx context.Context, t *task, tasks map[string]*task, d Dispatcher, ev *emitter) {
	n := t.n
	in := Inputs{}
	for _, dep := range n.Deps {
		if dt, ok := tasks[dep]; ok && dt.ok {
			in[dep] = dt.result
		}
	}
	start := time.Now()
	r, err := d.Dispatch(ctx, t.vn, in)
	t.res = &NodeResult{ID: n.ID, Name: t.name, Kind: n.Kind, Type: n.Type, Elapsed: Duration(time.Since(start))}
	switch {
	case err == nil:
		t.result, t.ok = r, true
		t.res.Status = StatusBuilt
		kind := EventDone
		if r.Cached {
			t.res.Status, kind = StatusCached, EventCached
		}
		t.res.Tree, t.res.Log = r.Tree.Digest, r.Log.Digest
		for name, o := range r.Outputs {
			if t.res.Outputs == nil {
				t.res.Outputs = map[string]digest.Digest{}
			}
			t.res.Outputs[name] = o.Digest
		}
		e := taskEvent(t, kind)
		e.Elapsed = t.res.Elapsed
		ev.emit(e)
	case errors.Is(err, ErrNotImplemented):
		skipTask(t, err, ev)
	case ctx.Err() != nil:
		// A cancelled build is not a node failure.
		skipTask(t, fmt.Errorf("%w: %w", ErrStopped, context.Cause(ctx)), ev)
		t.res.Elapsed = Duration(time.Since(start))
	default:
		ne := asNodeError(n, t.name, err)
		t.res.Status, t.err = StatusFailed, ne
		e := taskEvent(t, EventFailed)
		e.Err, e.Elapsed = ne, t.res.Elapsed
		ev.emit(e)
	}
}

// asNodeError makes err a *NodeError of n under the name the build shows.
func asNodeError(n *plan.Node, name string, err error) *NodeError {
	var ne *NodeError
	if errors.As(err, &ne) {
		c := *ne
		c.Node = name
		return &c
	}
	return &NodeError{Node: name, ID: n.ID, Origin: n.Origin, ExitCode: -1, Err: err}
}

// skipTask records t as skipped for reason.
func skipTask(t *task, reason error, ev *emitter) {
	t.res = &NodeResult{ID: t.n.ID, Name: t.name, Kind: t.n.Kind, Type: t.n.Type, Status: StatusSkipped, Reason: reason.Error()}
	t.ok = false
	e := taskEvent(t, EventSkipped)
	e.Err = reason
	ev.emit(e)
}

func taskEvent(t *task, kind EventKind) Event {
	return Event{Node: t.n.ID, Name: t.name, NodeKind: t.n.Kind, Type: t.n.Type, Kind: kind}
}

func isCleanup(n *plan.Node) bool  { return n.Kind == plan.KindHook && n.Type == "cleanup" }
func isPreBuild(n *plan.Node) bool { return n.Kind == plan.KindHook && n.Type == "pre-build" }

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
