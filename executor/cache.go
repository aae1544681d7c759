package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
)

// ActionCache holds the results of nodes by strong key: the local store, and
// (later) a registry or a tiered cache. A miss is an error wrapping
// store.ErrNotFound.
type ActionCache interface {
	GetAction(ctx context.Context, key string) (*store.Action, error)
	PutAction(ctx context.Context, a *store.Action) error
}

// sharer is a cache that passes on results found, not only results built: a
// tiered cache uploads a hit to its remote (--cache-to "every node result").
// Share is called once a hit has been checked against its node.
type sharer interface {
	Share(ctx context.Context, a *store.Action)
}

// keyLocker is what a cache shared by several processes offers so that each
// key is built once: the local store's flock per key.
type keyLocker interface {
	LockKeyWaiting(ctx context.Context, key string, waiting func(holder int)) (func(), error)
}

// cached is the local Dispatcher: it looks a node up in the action cache by its
// strong key and runs it through the Runner only on a miss, recording the
// result (and, for explain, its key inputs under its weak key). Where the cache
// can lock keys across processes, a miss takes the key's lock and looks again,
// so two builds on one store build a key once. Pre-build and cleanup hooks
// are never cached.
type cached struct {
	cache   ActionCache
	run     Runner
	st      *store.Store // weak records and failed nodes' logs
	plan    *plan.Plan
	pub     Publisher
	explain bool
	events  *emitter
}

var _ Dispatcher = (*cached)(nil)

func (c *cached) event(n *plan.Node, kind EventKind) Event {
	return Event{Node: n.ID, Name: n.Name, NodeKind: n.Kind, Type: n.Type, Kind: kind}
}

// Dispatch runs n unless the cache has it.
func (c *cached) Dispatch(ctx context.Context, vn plan.VerifiedNode, in Inputs) (Result, error) {
	n := vn.Node()
	if n == nil {
		return Result{}, errUnverified
	}
	if n.Kind == plan.KindPublish {
		if c.pub != nil {
			c.events.emit(c.event(n, EventStarted))
		}
		return publish(ctx, c.pub, c.st, c.plan, n, in)
	}
	if isCleanup(n) || isPreBuild(n) {
		// Pre-build hooks take what a build needs (a lab's lease) and
		// cleanup hooks release it: steps of every build, never cached (a
		// cached pre-build hook ran once ever, its cleanup every time).
		c.events.emit(c.event(n, EventStarted))
		res, err := c.run.Run(ctx, vn, in)
		if res.Log.Digest != "" {
			_ = putNodeLog(ctx, c.st, n.ID, res.Log.Digest)
		}
		return res, err
	}
	if res, ok, err := c.lookup(ctx, n); ok || err != nil {
		return res, err
	}
	if l, ok := c.cache.(keyLocker); ok {
		release, err := l.LockKeyWaiting(ctx, n.ID, func(holder int) {
			ev := c.event(n, EventWaiting)
			ev.Line = "waiting for another strata process building it"
			if holder > 0 {
				ev.Line = fmt.Sprintf("waiting for another strata process (pid %d) building it", holder)
			}
			c.events.emit(ev)
		})
		if err != nil {
			return Result{}, err
		}
		defer release()
		if res, ok, err := c.lookup(ctx, n); ok || err != nil {
			return res, err // another process built it while we waited
		}
	}
	if c.explain {
		if ex, err := Explain(ctx, c.st, c.plan.Host, n); err == nil {
			ev := c.event(n, EventExplain)
			ev.Line = ex.String()
			c.events.emit(ev)
		}
	}
	c.events.emit(c.event(n, EventStarted))
	res, err := c.run.Run(ctx, vn, in)
	if err != nil {
		if res.Log.Digest != "" {
			// Keep the log of a failed node for "strata logs".
			_ = putNodeLog(ctx, c.st, n.ID, res.Log.Digest)
		}
		return res, err
	}
	a := res.action(n, inputTrees(n, in))
	if err := c.cache.PutAction(ctx, a); err != nil {
		return Result{}, err
	}
	res.record = a.Stamp()
	if n.WeakKey != "" {
		if err := putWeak(ctx, c.st, c.plan.Host, n, a); err != nil {
			return Result{}, err
		}
	}
	return res, nil
}

// lookup returns n's cached result; ok is false on a miss.
func (c *cached) lookup(ctx context.Context, n *plan.Node) (Result, bool, error) {
	a, err := c.cache.GetAction(ctx, n.ID)
	if errors.Is(err, store.ErrNotFound) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, err
	}
	res := resultOf(a)
	res.Cached = true
	if err := c.fits(ctx, n, res); err != nil {
		// An entry is only as good as what wrote it: a shared cache's can be
		// anyone's. One that does not fit its node costs a rebuild, never a
		// wrong result or a build that fails for good.
		ev := c.event(n, EventWarning)
		ev.Line = "cached result refused, building it: " + err.Error()
		c.events.emit(ev)
		return Result{}, false, nil
	}
	if sh, ok := c.cache.(sharer); ok {
		sh.Share(ctx, a)
	}
	if res.Warning != "" {
		ev := c.event(n, EventWarning)
		ev.Line = res.Warning
		c.events.emit(ev)
	}
	return res, true, nil
}

// fits checks a cached result against the node it is for: the parts its
// kind must have, a single file that is a plain name of a file in its tree
// (a "../../etc/shadow" was bound into a stage from the host), and a source's
// content against the digest its key holds.
func (c *cached) fits(ctx context.Context, n *plan.Node, res Result) error {
	switch n.Kind {
	case plan.KindSource, plan.KindStage:
		if res.Tree.Digest == "" {
			return errors.New("it has no tree")
		}
	case plan.KindOutput:
		if _, ok := res.Outputs[n.Artifact]; n.Artifact != "" && !ok {
			return fmt.Errorf("it has no output %q", n.Artifact)
		}
	}
	// An output's size is the record's word; the blob's is the store's, and
	// a push checks one against the other (a wrong one failed every push).
	for name, o := range res.Outputs {
		p, err := c.st.BlobPath(o.Digest)
		if err != nil {
			return err
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() != o.Size {
			return fmt.Errorf("its output %q is not the %d bytes it says", name, o.Size)
		}
	}
	// A git source is keyed by a commit its tree does not show.
	source := n.Kind == plan.KindSource && n.Source != nil && n.Source.Git == ""
	if res.File == "" && !source {
		return nil
	}
	if res.File != "" && (res.File == "." || res.File == ".." || strings.ContainsAny(res.File, "/\x00")) {
		return fmt.Errorf("its file %q is not a plain name", res.File)
	}
	if res.Tree.Digest == "" {
		return errors.New("it has no tree")
	}
	t, err := c.st.GetTree(ctx, res.Tree.Digest)
	if err != nil {
		return err
	}
	if res.File != "" {
		if e, ok := t.Lookup(res.File); !ok || e.Type != tree.File {
			return fmt.Errorf("its tree holds no file %q", res.File)
		}
	}
	if source {
		if got, want := sourceContent(n.Source, t, res.File); got != want {
			return errors.New("its content is not the source's its key names")
		}
	}
	return nil
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
