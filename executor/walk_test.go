package executor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler/plan"
)

// fakeDispatcher records the nodes it is given and answers per node: the
// walker is tested alone, without sandboxes or a store.
type fakeDispatcher struct {
	mu       sync.Mutex
	calls    []string            // node names in dispatch order
	inputs   map[string][]string // node name → names of the inputs it got
	fail     map[string]bool
	block    map[string]bool // wait for ctx to end
	started  chan string     // every dispatch, when not nil
	inFlight int
	maxSeen  int
	release  chan struct{} // when not nil, every dispatch waits for it
	names    map[string]string
}

func (f *fakeDispatcher) Dispatch(ctx context.Context, vn plan.VerifiedNode, in Inputs) (Result, error) {
	n := vn.Node()
	f.mu.Lock()
	f.calls = append(f.calls, n.Name)
	var got []string
	for id := range in {
		got = append(got, f.names[id])
	}
	slices.Sort(got)
	f.inputs[n.Name] = got
	f.inFlight++
	f.maxSeen = max(f.maxSeen, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if f.started != nil {
		f.started <- n.Name
	}
	if f.release != nil {
		<-f.release
	}
	switch {
	case f.block[n.Name]:
		<-ctx.Done()
		return Result{}, ctx.Err()
	case f.fail[n.Name]:
		return Result{}, fmt.Errorf("%s broke", n.Name)
	}
	return Result{Tree: ocispec.Descriptor{MediaType: MediaTypeTree, Digest: digest.FromString(n.Name)}}, nil
}

// testPlan makes a verified plan of nodes "kind:name" with their dependencies
// by name, in the order given: each node is what Verify accepts (a path
// source, a user-module stage, a tar output, a job, a hook on the event its
// name starts with, a publish), keyed by its content.
func testPlan(t *testing.T, nodes ...[]string) (*plan.Verified, *fakeDispatcher) {
	t.Helper()
	const module = "test.step"
	p := &plan.Plan{Version: plan.Version, Images: map[string]*plan.Image{},
		Stages: map[string]*plan.Module{module: {Name: module, Digest: digest.FromString(module).Encoded()}}}
	tar, _ := plan.LookupOutput("tar")
	ids := map[string]string{}
	f := &fakeDispatcher{inputs: map[string][]string{}, fail: map[string]bool{}, block: map[string]bool{}, names: map[string]string{}}
	for _, spec := range nodes {
		kind, name, _ := strings.Cut(spec[0], ":")
		n := &plan.Node{Kind: kind, Name: name, Command: []string{"echo", name}}
		switch kind {
		case plan.KindSource:
			n.Type, n.Command = "path", nil
			n.Source = &plan.Source{Path: name, Digest: digest.FromString(name).String()}
		case plan.KindStage:
			n.Type, n.ModuleDigest = module, p.Stages[module].Digest
		case plan.KindOutput:
			n.Type, n.ModuleDigest, n.Artifact, n.Command = "tar", tar.Digest(), name+".tar", nil
		case plan.KindHook:
			n.Type, n.OnFailure = "post-build", "fail"
			if name == "cleanup" || strings.HasPrefix(name, "pre-build") {
				n.Type, _, _ = strings.Cut(name, ":")
			}
		case plan.KindPublish:
			n.Command = nil
		}
		for _, dep := range spec[1:] {
			n.Deps = append(n.Deps, ids[dep])
			if kind == plan.KindStage || kind == plan.KindOutput {
				n.Inputs.Tree = ids[dep]
			} else {
				n.Inputs.After = append(n.Inputs.After, ids[dep])
			}
		}
		doc, err := n.StrongKeyInputs(p.Host)
		if err != nil {
			t.Fatal(err)
		}
		n.ID = plan.Hash(doc)
		ids[name] = n.ID
		f.names[n.ID] = name
		p.Nodes = append(p.Nodes, n)
	}
	v, err := plan.Verify(p, plan.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v, f
}

func allIDs(v *plan.Verified) []string {
	var ids []string
	for _, n := range v.Plan().Nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

func statuses(order []*task) map[string]string {
	out := map[string]string{}
	for _, t := range order {
		out[t.n.Name] = t.res.Status
	}
	return out
}

// TestWalkOrder: one job at a time, ready nodes go by rank (fetch, build,
// outputs, jobs and hooks, publish), then plan order; each node gets the
// results of its dependencies.
func TestWalkOrder(t *testing.T) {
	p, f := testPlan(t,
		[]string{"job:check"},
		[]string{"source:src"},
		[]string{"stage:a", "src"},
		[]string{"output:tar", "a"},
		[]string{"stage:b"},
		[]string{"publish:push", "tar"},
	)
	order, failed := walk(context.Background(), p, allIDs(p), f, walkOptions{Jobs: 1, Events: &emitter{}})
	if len(failed) != 0 {
		t.Fatal(failed)
	}
	want := []string{"src", "a", "b", "tar", "check", "push"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("dispatch order %v, want %v", f.calls, want)
	}
	if got := f.inputs["tar"]; !slices.Equal(got, []string{"a"}) {
		t.Errorf("tar got inputs %v", got)
	}
	for name, st := range statuses(order) {
		if st != StatusBuilt {
			t.Errorf("%s: %s", name, st)
		}
	}
}

// TestWalkFailure: a failed node's dependents are skipped and, without
// keep-going, nothing starts after it; with keep-going what does not depend on
// it still runs.
func TestWalkFailure(t *testing.T) {
	for _, keepGoing := range []bool{false, true} {
		t.Run(fmt.Sprint("keep-going=", keepGoing), func(t *testing.T) {
			p, f := testPlan(t,
				[]string{"stage:a"},
				[]string{"stage:b", "a"},
				[]string{"output:tar", "b"},
				[]string{"stage:c"},
			)
			f.fail["a"] = true
			order, failed := walk(context.Background(), p, allIDs(p), f, walkOptions{Jobs: 1, KeepGoing: keepGoing, Events: &emitter{}})
			if len(failed) != 1 || failed[0].Node != "a" || failed[0].Err.Error() != "a broke" {
				t.Fatalf("failed: %+v", failed)
			}
			st := statuses(order)
			if st["a"] != StatusFailed || st["b"] != StatusSkipped || st["tar"] != StatusSkipped {
				t.Errorf("statuses %v", st)
			}
			for _, tk := range order {
				if tk.n.Name == "b" && tk.res.Reason != "dependency failed: a" {
					t.Errorf("b skipped for %q", tk.res.Reason)
				}
			}
			wantC := StatusSkipped
			if keepGoing {
				wantC = StatusBuilt
			}
			if st["c"] != wantC {
				t.Errorf("c: %s, want %s (calls %v)", st["c"], wantC, f.calls)
			}
			if slices.Contains(f.calls, "b") || slices.Contains(f.calls, "tar") {
				t.Errorf("dispatched a dependent of the failed node: %v", f.calls)
			}
		})
	}
}

// TestWalkCancel: cancelling mid-build ends the running node, starts nothing
// more and reports every other node skipped as stopped, not failed; cleanup
// hooks still run (they release what the build took).
func TestWalkCancel(t *testing.T) {
	p, f := testPlan(t,
		[]string{"stage:a"},
		[]string{"stage:slow"},
		[]string{"stage:b", "a"},
		[]string{"stage:after", "slow"},
		[]string{"hook:cleanup", "b"},
	)
	f.block["slow"] = true
	f.started = make(chan string, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var order []*task
	var failed []*NodeError
	go func() {
		order, failed = walk(ctx, p, allIDs(p), f, walkOptions{Jobs: 2, Events: &emitter{}})
		close(done)
	}()
	for name := range f.started {
		if name == "slow" {
			break
		}
	}
	cancel()
	<-done
	if len(failed) != 0 {
		t.Errorf("a cancelled build reported failures: %+v", failed)
	}
	st := statuses(order)
	if st["slow"] != StatusSkipped || st["b"] != StatusSkipped || st["cleanup"] != StatusBuilt {
		t.Errorf("statuses %v", st)
	}
	if !slices.Contains(f.calls, "cleanup") {
		t.Errorf("cleanup did not run after a cancellation: %v", f.calls)
	}
	for _, tk := range order {
		if tk.res.Status == StatusSkipped && strings.Contains(tk.res.Reason, "dependency failed") {
			t.Errorf("%s: skipped as %q, but nothing failed", tk.name, tk.res.Reason)
		}
	}
}

// TestWalkCleanupLast: a cleanup hook runs after every other node, also when
// one failed.
func TestWalkCleanupLast(t *testing.T) {
	p, f := testPlan(t,
		[]string{"stage:a"},
		[]string{"output:tar", "a"},
		[]string{"hook:cleanup", "tar"},
		[]string{"stage:b"},
		[]string{"stage:c", "b"},
	)
	f.fail["a"] = true
	order, _ := walk(context.Background(), p, allIDs(p), f, walkOptions{Jobs: 2, KeepGoing: true, Events: &emitter{}})
	if last := f.calls[len(f.calls)-1]; last != "cleanup" {
		t.Errorf("calls %v: cleanup not last", f.calls)
	}
	if st := statuses(order); st["cleanup"] != StatusBuilt || st["tar"] != StatusSkipped {
		t.Errorf("statuses %v", st)
	}
	if got := f.inputs["cleanup"]; len(got) != 0 {
		t.Errorf("cleanup got the failed output's result: %v", got)
	}
}

// TestWalkJobsBound: -j bounds the nodes in flight.
func TestWalkJobsBound(t *testing.T) {
	var nodes [][]string
	for i := range 6 {
		nodes = append(nodes, []string{fmt.Sprintf("stage:s%d", i)})
	}
	p, f := testPlan(t, nodes...)
	f.release = make(chan struct{})
	f.started = make(chan string)
	done := make(chan struct{})
	go func() {
		walk(context.Background(), p, allIDs(p), f, walkOptions{Jobs: 2, Events: &emitter{}})
		close(done)
	}()
	for range 6 {
		<-f.started
		f.release <- struct{}{}
	}
	<-done
	if len(f.calls) != 6 {
		t.Errorf("calls %v", f.calls)
	}
	if f.maxSeen > 2 {
		t.Errorf("%d nodes in flight with -j 2", f.maxSeen)
	}
}

// TestWalkSharedNodeOnce: a node two targets need is dispatched once.
func TestWalkSharedNodeOnce(t *testing.T) {
	p, f := testPlan(t,
		[]string{"source:src"},
		[]string{"stage:base", "src"},
		[]string{"stage:one", "base"},
		[]string{"stage:two", "base"},
	)
	one, two := p.Plan().Nodes[2], p.Plan().Nodes[3]
	ids, err := ResolveTargets(p.Plan(), []string{one.Name, two.Name})
	if err != nil {
		t.Fatal(err)
	}
	walk(context.Background(), p, ids, f, walkOptions{Jobs: 4, Events: &emitter{}})
	count := map[string]int{}
	for _, c := range f.calls {
		count[c]++
	}
	for _, name := range []string{"src", "base", "one", "two"} {
		if count[name] != 1 {
			t.Errorf("%s dispatched %d times", name, count[name])
		}
	}
}

// TestWalkPreBuildFirst: pre-build hooks run before any other node, which
// need no edge to them; when one fails, everything but cleanup is skipped.
func TestWalkPreBuildFirst(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprint("fail=", fail), func(t *testing.T) {
			p, f := testPlan(t,
				[]string{"source:src"},
				[]string{"stage:a", "src"},
				[]string{"hook:pre-build"},
				[]string{"stage:b"},
				[]string{"hook:cleanup", "a"},
			)
			f.fail["pre-build"] = fail
			order, _ := walk(context.Background(), p, allIDs(p), f, walkOptions{Jobs: 2, KeepGoing: true, Events: &emitter{}})
			if f.calls[0] != "pre-build" {
				t.Errorf("calls %v: the pre-build hook did not run first", f.calls)
			}
			st := statuses(order)
			for _, name := range []string{"src", "a", "b"} {
				if want := map[bool]string{false: StatusBuilt, true: StatusSkipped}[fail]; st[name] != want {
					t.Errorf("%s: %s, want %s", name, st[name], want)
				}
			}
			if st["cleanup"] != StatusBuilt {
				t.Errorf("cleanup: %s", st["cleanup"])
			}
		})
	}
}

// TestUnverifiedNodeRefused: a node reaches a runner or the dispatcher only
// from a verified plan; the zero VerifiedNode, the only other value a caller
// can make, is refused before anything runs.
func TestUnverifiedNodeRefused(t *testing.T) {
	ctx := context.Background()
	if _, err := (&LocalRunner{}).Run(ctx, plan.VerifiedNode{}, nil); !errors.Is(err, errUnverified) {
		t.Errorf("runner: %v", err)
	}
	if _, err := (&cached{}).Dispatch(ctx, plan.VerifiedNode{}, nil); !errors.Is(err, errUnverified) {
		t.Errorf("dispatcher: %v", err)
	}
}

// TestWalkCleanupAfterStop: a failure that stops the build (no keep-going)
// leaves what was queued unrun, and the cleanup hooks still run.
func TestWalkCleanupAfterStop(t *testing.T) {
	p, f := testPlan(t,
		[]string{"stage:a"},
		[]string{"stage:b"},
		[]string{"stage:c"},
		[]string{"hook:cleanup", "c"},
	)
	f.fail["a"] = true
	order, failed := walk(context.Background(), p, allIDs(p), f, walkOptions{Jobs: 1, Events: &emitter{}})
	if len(failed) != 1 {
		t.Errorf("failed %+v", failed)
	}
	if !slices.Contains(f.calls, "cleanup") {
		t.Errorf("cleanup did not run after a failure stopped the build: calls %v, statuses %v", f.calls, statuses(order))
	}
}
