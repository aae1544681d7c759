package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/builtin"
	"github.com/strata-build/strata/executor/sandbox"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
)

// Runner runs one node of a verified plan given the results of its
// dependencies (Inputs, by node ID) and returns its own result. It knows
// nothing of the graph, of caching or of other nodes' working state: the local
// build, the remote cache and a remote worker all run nodes through it. A
// failed command is a *NodeError with its exit status and log tail.
type Runner interface {
	Run(ctx context.Context, n plan.VerifiedNode, in Inputs) (Result, error)
}

// LocalRunner runs nodes on this machine: in bubblewrap sandboxes over the
// local store, one operation per node kind (like BuildKit's ops): source,
// stage, output, job, hook; publish is not implemented here.
type LocalRunner struct {
	st     *store.Store
	opts   Options
	events *emitter
	euid   int
	egid   int

	checked sync.Map // tree digest → *onceErr: checkouts hashed for assemblers

	hostOnce sync.Once
	host     *sandbox.Host
	hostErr  error
	warnOnce sync.Once
}

var _ Runner = (*LocalRunner)(nil)

// NewLocalRunner returns a runner over opts.Store, with opts' binary,
// workspace, limits and events (see Options; targets, jobs and the out
// directory are the build's, not the runner's).
func NewLocalRunner(opts Options) (*LocalRunner, error) {
	if opts.Store == nil {
		return nil, fmt.Errorf("runner: no store")
	}
	opts = opts.withDefaults()
	return &LocalRunner{st: opts.Store, opts: opts, events: &emitter{fn: opts.Events}, euid: os.Geteuid(), egid: os.Getegid()}, nil
}

// Run runs n. Its dependencies' results must be in in.
func (r *LocalRunner) Run(ctx context.Context, vn plan.VerifiedNode, in Inputs) (Result, error) {
	n := vn.Node()
	if n == nil {
		return Result{}, errUnverified
	}
	switch n.Kind {
	case plan.KindSource:
		return r.runSource(ctx, n)
	case plan.KindStage:
		return r.runStage(ctx, n, in)
	case plan.KindOutput:
		return r.runOutput(ctx, n, in)
	case plan.KindJob:
		return r.runJob(ctx, n, in)
	case plan.KindHook:
		return r.runHook(ctx, n, in)
	case plan.KindPublish:
		return Result{}, ErrNotImplemented
	}
	return Result{}, fmt.Errorf("unknown node kind %q", n.Kind)
}

// event is an event of node n.
func (r *LocalRunner) event(n *plan.Node, kind EventKind) Event {
	return Event{Node: n.ID, Name: n.Name, NodeKind: n.Kind, Type: n.Type, Kind: kind}
}

// sandboxHost returns Options.Host, or detects it the first time a node must
// run: probing bwrap, namespaces and overlayfs costs ~30 ms, which a fully
// cached build should not pay. The probes' results are kept in the store
// (sandbox.DetectCached), so a build after the first skips them. The first node
// to run also says, once, when stages cannot have copy-on-write staging.
func (r *LocalRunner) sandboxHost(ctx context.Context, n *plan.Node) (*sandbox.Host, error) {
	r.hostOnce.Do(func() {
		if r.host = r.opts.Host; r.host == nil {
			if r.host, r.hostErr = sandbox.DetectCached(ctx, r.hostCache()); r.hostErr != nil {
				r.hostErr = fmt.Errorf("sandbox: %w (see strata doctor)", r.hostErr)
			}
		}
	})
	if r.hostErr == nil && n != nil && r.host.Staging == sandbox.StagingCopy {
		r.warnOnce.Do(func() {
			ev := r.event(n, EventWarning)
			ev.Line = "overlayfs is unavailable here: each stage gets a full copy of its input tree, which is slower (see strata doctor)"
			if r.host.Overlay {
				ev.Line = "copy staging (" + sandbox.StagingEnv + "=copy): each stage gets a full copy of its input tree, which is slower"
			}
			r.events.emit(ev)
		})
	}
	return r.host, r.hostErr
}

// hostCache is the file where the sandbox probes' results are kept, in the
// store's state directory "sandbox"; "" (nothing cached) when it has none.
func (r *LocalRunner) hostCache() string {
	dir, err := r.st.StateDir("sandbox")
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "host.json")
}

// input returns the result of dependency id, which must have finished.
func input(in Inputs, id string) (Result, error) {
	res, ok := in[id]
	if !ok {
		return Result{}, fmt.Errorf("internal: the result of dependency %s was not given", id)
	}
	return res, nil
}

// treeDigest returns the tree of dependency id; "" is the empty tree (an
// image with no stages).
func (r *LocalRunner) treeDigest(ctx context.Context, in Inputs, id string) (digest.Digest, error) {
	if id == "" {
		return r.st.PutTree(ctx, &tree.Tree{})
	}
	res, err := input(in, id)
	if err != nil {
		return "", err
	}
	if res.Tree.Digest == "" {
		return "", fmt.Errorf("dependency %s has no tree", id)
	}
	return res.Tree.Digest, nil
}

// treeOf returns the tree of dependency id and its checkout.
func (r *LocalRunner) treeOf(ctx context.Context, in Inputs, id string) (*tree.Tree, string, error) {
	co, d, err := r.checkoutOf(ctx, in, id)
	if err != nil {
		return nil, "", err
	}
	t, err := r.st.GetTree(ctx, d)
	if err != nil {
		return nil, "", err
	}
	return t, co, nil
}

// checkoutOf returns the checkout of dependency id's tree and the tree's
// digest, without reading its manifest (build roots and mounts need only the
// files).
func (r *LocalRunner) checkoutOf(ctx context.Context, in Inputs, id string) (string, digest.Digest, error) {
	d, err := r.treeDigest(ctx, in, id)
	if err != nil {
		return "", "", err
	}
	co, err := r.st.Checkout(ctx, d)
	if err != nil {
		return "", "", err
	}
	return co, d, nil
}

// buildRoot returns the sandbox root for the node's build root.
func (r *LocalRunner) buildRoot(ctx context.Context, n *plan.Node, in Inputs) (string, error) {
	if n.Inputs.BuildRoot == "" || n.Inputs.BuildRoot == plan.HostRoot {
		return sandbox.HostRoot, nil
	}
	co, _, err := r.checkoutOf(ctx, in, n.Inputs.BuildRoot)
	if err != nil {
		return "", fmt.Errorf("build root: %w", err)
	}
	return co, nil
}

// mounts returns the host paths of the node's named inputs: a checkout of a
// source's or image's tree, or the file itself for a single-file source.
func (r *LocalRunner) mounts(ctx context.Context, n *plan.Node, in Inputs) (map[string]string, error) {
	if len(n.Inputs.Mounts) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for name, id := range n.Inputs.Mounts {
		res, err := input(in, id)
		if err != nil {
			return nil, err
		}
		co, _, err := r.checkoutOf(ctx, in, id)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", name, err)
		}
		if res.File != "" {
			co = filepath.Join(co, res.File)
		}
		out[name] = co
	}
	return out, nil
}

// inputTrees are the trees of n's dependencies it is built from (input tree,
// build root, mounted inputs), recorded with its action entry.
func inputTrees(n *plan.Node, in Inputs) []digest.Digest {
	var out []digest.Digest
	add := func(id string) {
		if res, ok := in[id]; ok && res.Tree.Digest != "" {
			out = append(out, res.Tree.Digest)
		}
	}
	add(n.Inputs.Tree)
	add(n.Inputs.BuildRoot)
	for _, id := range n.Inputs.Mounts {
		add(id)
	}
	return sortedDigests(out)
}

// isBuiltin reports whether typ is a built-in stage type.
func isBuiltin(typ string) bool {
	_, ok := plan.LookupBuiltin(typ)
	return ok
}

// stageCommand returns what a stage runs.
func (r *LocalRunner) stageCommand(n *plan.Node) (argv []string, env map[string]string, chroot, needBinary bool, err error) {
	switch {
	case n.Type == "strata.run":
		argv, env, chroot, err = builtin.RunCommand(n.Options)
		return argv, env, chroot, false, err
	case isBuiltin(n.Type):
		if r.opts.Binary == "" {
			return nil, nil, false, false, fmt.Errorf("built-in stage %s needs a static strata binary (Options.Binary)", n.Type)
		}
		return []string{sandbox.BinaryPath, "builtin", n.Type}, nil, false, true, nil
	case len(n.Command) > 0:
		return n.Command, nil, false, false, nil
	}
	return nil, nil, false, false, fmt.Errorf("stage type %s has no command", n.Type)
}

// treeDesc describes the tree manifest d, which the store must hold: a
// descriptor with a size it could not read would be recorded in the action
// and served to every cache hit.
func (r *LocalRunner) treeDesc(d digest.Digest) (ocispec.Descriptor, error) {
	p, err := r.st.BlobPath(d)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("tree %s: %w", d, err)
	}
	return ocispec.Descriptor{MediaType: MediaTypeTree, Digest: d, Size: fi.Size()}, nil
}
