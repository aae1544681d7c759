package executor

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/sandbox"
	"github.com/strata-build/strata/executor/store"
)

// DefaultMaxLogBytes caps the output of one node (stdout plus stderr) when
// Options.MaxLogBytes is zero: 1 GiB. A node that writes more is killed and fails.
const DefaultMaxLogBytes int64 = 1 << 30

// LogTailLines is how many log lines a NodeError keeps.
const LogTailLines = 20

// Sentinel errors.
var (
	// ErrUnknownTarget is wrapped by Build when a target names no image or node.
	ErrUnknownTarget = errors.New("unknown build target")
	// ErrSourceChanged is wrapped when a path source differs from the digest the
	// plan recorded at compile time.
	ErrSourceChanged = errors.New("source changed since compile")
	// ErrDigestMismatch is wrapped when a fetched source does not match its sha256.
	ErrDigestMismatch = errors.New("source digest mismatch")
	// ErrDependencyFailed is the reason of a node skipped because a dependency
	// failed.
	ErrDependencyFailed = errors.New("dependency failed")
	// ErrNotImplemented is the reason of a skipped publish node: a build
	// publishes nothing; strata push does.
	ErrNotImplemented = errors.New("not published: strata push publishes")
	// ErrStopped is the reason of a node skipped because the build stopped after
	// another node failed (without KeepGoing) or was cancelled.
	ErrStopped = errors.New("build stopped")
)

// Options configure Build. Store is required; the zero value of every other field
// is a usable default.
type Options struct {
	// Store is the content-addressed store and action cache.
	Store *store.Store
	// Host is what sandbox.Detect found; stages run with it. When nil it is
	// detected the first time a node has to run.
	Host *sandbox.Host
	// Binary is the path of a static binary that runs built-in stages
	// ("BINARY builtin TYPE"), bound into the sandbox: strata itself or its
	// companion (sandbox.BuiltinBinary). Required when the plan has built-in
	// stages to run.
	Binary string
	// Jobs bounds the nodes that run at once; default runtime.NumCPU().
	Jobs int
	// KeepGoing keeps building nodes that do not depend on a failed node.
	// Default false: after the first failure no new node starts (running ones
	// finish) and the rest are skipped.
	KeepGoing bool
	// Targets selects what to build: "images.NAME" or a bare "NAME" (the image's
	// tree, its outputs, hooks and publish node), any node name
	// ("images.NAME.stages[2]", "jobs.NAME", "sources.NAME") or node ID; each with
	// everything it depends on. Empty builds the whole plan.
	Targets []string
	// Workspace is the directory path sources are relative to; default ".".
	Workspace string
	// Events receives every event, one call at a time (never concurrently).
	// Nil discards them.
	Events func(Event)
	// Explain sends an EventExplain before each node that is rebuilt, saying
	// which key input changed since the last build of its weak key.
	Explain bool
	// OutDir is where outputs are exported for the user, as
	// OutDir/<image>/<output name>: copies the user owns and may change, never
	// links into the store. Default <Workspace>/out.
	OutDir string
	// Cache is where node results are looked up and recorded by strong key;
	// nil means Store. A remote cache (registry.Tiered: local first, then a
	// registry) goes here; it must record hits in Store.
	Cache ActionCache
	// Publisher runs publish nodes (strata push); nil skips them: a build
	// does not publish.
	Publisher Publisher
	// Runner runs the nodes the action cache does not have; nil means a
	// LocalRunner over Store with these options (NewLocalRunner).
	Runner Runner
	// MaxLogBytes caps one node's output; default DefaultMaxLogBytes.
	MaxLogBytes int64
	// PlanDigest names the plan: the SHA-256 of its encoding (strata passes
	// the one its compile cache keeps). With it, a build that succeeds over
	// the local store keeps a record of what it did, from which UpToDate can
	// tell, without the plan, that the same build again has nothing to do.
	// Empty keeps no record.
	PlanDigest digest.Digest
	// Timeout caps the run time of every stage, job and hook, below their own
	// timeout (default sandbox.DefaultTimeout, 1h); 0 adds no cap. A node that
	// runs out of time fails with sandbox.ErrTimeout, its log kept.
	Timeout time.Duration
}

// Node statuses in a Result.
const (
	StatusBuilt   = "built"
	StatusCached  = "cached"
	StatusFailed  = "failed"
	StatusSkipped = "skipped"
)

// NodeResult is what happened to one node.
type NodeResult struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Type   string `json:"type,omitempty"`
	Status string `json:"status"`
	// Tree is the node's tree (sources, stages; an oci output's layout).
	Tree digest.Digest `json:"tree,omitempty"`
	// Outputs are the artifacts of an output node by name.
	Outputs map[string]digest.Digest `json:"outputs,omitempty"`
	// Log is the digest of the node's log blob, when it ran something.
	Log     digest.Digest `json:"log,omitempty"`
	Elapsed Duration      `json:"elapsed"`
	// Reason says why a node was skipped.
	Reason string `json:"reason,omitempty"`
}

// Artifact is one output exported to the out directory.
type Artifact struct {
	// Image is the image name; Name the output's file name; Format its type.
	Image  string `json:"image"`
	Name   string `json:"name"`
	Format string `json:"format"`
	// Node is the output node's name.
	Node string `json:"node"`
	// Path is where the artifact is: a file, or a directory for tree and oci
	// outputs.
	Path string `json:"path"`
	// Digest is the artifact's digest (the manifest's for oci, the tree
	// manifest's for tree) and Size its size in bytes.
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"media_type"`
	// State is ArtifactExported or ArtifactCurrent: either way the file at Path
	// is this build's.
	State string `json:"state"`
}

// BuildResult is the outcome of a build.
type BuildResult struct {
	// Nodes are the nodes of the build in plan order.
	Nodes []*NodeResult `json:"nodes"`
	// Artifacts are the outputs built or found in the cache, by image and name.
	Artifacts []Artifact `json:"artifacts"`
	// Counts per status.
	Built   int `json:"built"`
	Cached  int `json:"cached"`
	Failed  int `json:"failed"`
	Skipped int `json:"skipped"`
	// OutDir is the out directory used.
	OutDir string `json:"out_dir"`
	// Stale lists the images this build did not export because an output or a
	// post-build hook failed, whose out directory holds an earlier build's
	// outputs.
	Stale []string `json:"stale,omitempty"`
	// ExportsFailed counts the images whose export failed (their nodes built
	// or were cached; Failed does not count them).
	ExportsFailed int `json:"exports_failed,omitempty"`
	// Pruned lists the images the workspace no longer has whose exports a
	// build of the whole workspace removed from the out directory.
	Pruned []string `json:"pruned,omitempty"`
}

// NodeError is a failed node: what failed, where it comes from in the spec, and
// the end of its log.
type NodeError struct {
	// Node is the node's name and ID its strong key.
	Node string
	ID   string
	// Origin is the CUE position (file:line:col) the node comes from.
	Origin string
	// ExitCode is the command's exit status, or -1 when no command ran to
	// completion (Err says why).
	ExitCode int
	// Log is the last LogTailLines lines of the node's output.
	Log string
	// Err is the underlying error, or nil for a plain non-zero exit.
	Err error
}

func (e *NodeError) Error() string {
	var b strings.Builder
	b.WriteString(e.Node)
	if e.Origin != "" {
		fmt.Fprintf(&b, " (%s)", e.Origin)
	}
	switch {
	case e.Err != nil && e.ExitCode > 0:
		fmt.Fprintf(&b, ": exit status %d: %v", e.ExitCode, e.Err)
	case e.Err != nil:
		fmt.Fprintf(&b, ": %v", e.Err)
	default:
		fmt.Fprintf(&b, ": exit status %d", e.ExitCode)
	}
	if tail := strings.TrimRight(e.Log, "\n"); tail != "" {
		b.WriteString("\nlog tail:")
		for _, l := range strings.Split(tail, "\n") {
			b.WriteString("\n  | " + l)
		}
	}
	return b.String()
}

func (e *NodeError) Unwrap() error { return e.Err }

// BuildError reports the nodes that failed.
type BuildError struct {
	Failed []*NodeError
}

func (e *BuildError) Error() string {
	if len(e.Failed) == 1 {
		return "build failed: " + e.Failed[0].Error()
	}
	parts := make([]string, len(e.Failed))
	for i, f := range e.Failed {
		parts[i] = f.Error()
	}
	return fmt.Sprintf("build failed: %d nodes failed:\n%s", len(e.Failed), strings.Join(parts, "\n"))
}

// Unwrap returns the node errors.
func (e *BuildError) Unwrap() []error {
	out := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		out[i] = f
	}
	return out
}

// Build runs the nodes of the verified plan that opts.Targets select, in
// dependency order, over opts.Store, and exports the outputs it finished. It
// returns a BuildResult describing every node even when the build fails; the
// error is a *BuildError when nodes failed, wraps ctx.Err() when the build was
// cancelled, and wraps ErrUnknownTarget for a bad target.
//
// It is the local wiring of the executor's seams (DESIGN §4): the walker hands
// ready nodes to a dispatcher that looks each up in the action cache by its
// strong key and, on a miss, runs it through a LocalRunner under the key's lock
// (so concurrent strata processes build a key once), recording the result and,
// for explain, its key inputs under its weak key.
func Build(ctx context.Context, v *plan.Verified, opts Options) (*BuildResult, error) {
	p := v.Plan()
	if opts.Store == nil {
		return nil, errors.New("build: no store")
	}
	opts = opts.withDefaults()
	ids, err := ResolveTargets(p, opts.Targets)
	if err != nil {
		return nil, err
	}
	// The build's lease keeps what it uses and makes from GC, which never
	// waits for a build to end.
	lease, err := opts.Store.NewLease(ctx, "build")
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	defer lease.Release()
	ctx = store.WithLease(ctx, lease)

	names := displayNames(p, opts.Targets)
	requires := needsCapabilities(p, ids)
	ev := &emitter{fn: opts.Events, total: len(ids), names: names}
	runner := opts.Runner
	if runner == nil {
		lr, err := NewLocalRunner(opts)
		if err != nil {
			return nil, err
		}
		lr.events = ev
		runner = lr
		if requires {
			// Before any work: a node this host cannot run fails the build now,
			// not after an hour of others.
			host, err := lr.sandboxHost(ctx, nil)
			if err != nil {
				return nil, err
			}
			if err := checkCapabilities(p, ids, names, HostCapabilities(host)); err != nil {
				return nil, err
			}
		}
	}
	cache := opts.Cache
	if cache == nil {
		cache = opts.Store
	}
	d := &cached{cache: cache, run: runner, st: opts.Store, plan: p, pub: opts.Publisher, explain: opts.Explain, events: ev}
	exp := newExports(ctx, opts, p, ids)
	order, failed := walk(ctx, v, ids, d, walkOptions{Jobs: opts.Jobs, KeepGoing: opts.KeepGoing, Names: names, Events: ev, Finished: exp.finished})
	ex := exp.result()
	if ctx.Err() == nil {
		failed = append(failed, ex.failed...)
	}
	res := &BuildResult{OutDir: ex.outDir, Artifacts: ex.artifacts, Stale: ex.stale, ExportsFailed: len(ex.failed), Pruned: ex.pruned}
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
		return res, &BuildError{Failed: failed}
	}
	writeBuildRecord(ctx, opts, res, order, ex.whole, ev.hasWarned(), requires)
	return res, nil
}

// withDefaults fills in the zero fields of opts that have a default.
func (opts Options) withDefaults() Options {
	if opts.Jobs <= 0 {
		opts.Jobs = runtime.NumCPU()
	}
	if opts.Workspace == "" {
		opts.Workspace = "."
	}
	if opts.MaxLogBytes <= 0 {
		opts.MaxLogBytes = DefaultMaxLogBytes
	}
	if opts.Binary != "" {
		if abs, err := filepath.Abs(opts.Binary); err == nil {
			opts.Binary = abs
		}
	}
	return opts
}

// ResolveTargets returns the IDs of the nodes the targets select (see
// Options.Targets), with their dependencies, in plan order.
func ResolveTargets(p *plan.Plan, targets []string) ([]string, error) {
	if len(targets) == 0 {
		ids := make([]string, len(p.Nodes))
		for i, n := range p.Nodes {
			ids[i] = n.ID
		}
		return ids, nil
	}
	var want []string
	for _, t := range targets {
		name, isImage := strings.CutPrefix(t, "images.")
		if img, ok := p.Images[name]; ok && (isImage || !strings.Contains(t, ".")) {
			if img.Tree != "" {
				want = append(want, img.Tree)
			}
			want = append(want, img.Outputs...)
			if img.Publish != "" {
				want = append(want, img.Publish)
			}
			want = append(want, img.Hooks...)
			continue
		}
		if n, ok := p.Node(t); ok {
			want = append(want, n.ID)
			want = append(want, gatesOf(p, n)...)
			continue
		}
		if !isImage && !strings.Contains(t, ".") {
			if n, ok := p.Node("images." + t); ok {
				want = append(want, n.ID)
				want = append(want, gatesOf(p, n)...)
				continue
			}
		}
		return nil, fmt.Errorf("%w %q: not an image%s or node name", ErrUnknownTarget, t, knownImages(p))
	}
	return p.Closure(want), nil
}

// gatesOf are the hooks that must run with n when n alone is asked for: the
// pre-build hooks of the image n belongs to, and for one of its outputs its
// post-build hooks, which decide whether the outputs are exported. Building
// images.a.outputs[0] exported an output the image's post-build gate had
// rejected, and built a's stages without its pre-build hook.
func gatesOf(p *plan.Plan, n *plan.Node) []string {
	names := []string{n.Name}
	for _, a := range n.Aliases {
		names = append(names, a.Name)
	}
	var out []string
	for _, nn := range names {
		// The longest image name that prefixes it: images a and a.b both
		// prefix images.a.b.stages[0].
		var img *plan.Image
		best := ""
		for name, im := range p.Images {
			if strings.HasPrefix(nn, "images."+name+".") && len(name) > len(best) {
				img, best = im, name
			}
		}
		if img == nil {
			continue
		}
		isOutput := slices.Contains(img.Outputs, n.ID)
		for _, id := range img.Hooks {
			if h, ok := p.Node(id); ok && (h.Type == "pre-build" || isOutput && h.Type == "post-build") {
				out = append(out, id)
			}
		}
	}
	return out
}

// displayNames picks, for nodes the plan shares between images, the name under
// an image the targets asked for: building images.b shows
// images.b.stages[0], not the images.a.stages[0] it is identical to.
func displayNames(p *plan.Plan, targets []string) map[string]string {
	out := map[string]string{}
	for _, t := range targets {
		name, _ := strings.CutPrefix(t, "images.")
		if _, ok := p.Images[name]; !ok {
			continue
		}
		prefix := "images." + name + "."
		for _, n := range p.Nodes {
			if strings.HasPrefix(n.Name, prefix) {
				continue
			}
			for _, a := range n.Aliases {
				if strings.HasPrefix(a.Name, prefix) {
					out[n.ID] = a.Name
					break
				}
			}
		}
	}
	return out
}

// ResolveNodes maps names to the nodes they name, for commands about nodes
// (explain, logs): a node name, alias or ID, or an image (images.NAME or NAME:
// its own stages, outputs and hooks, in plan order). An unknown name is an
// error wrapping ErrUnknownTarget.
func ResolveNodes(p *plan.Plan, names []string) ([]*plan.Node, error) {
	var out []*plan.Node
	for _, name := range names {
		if n, ok := p.Node(name); ok {
			out = append(out, n)
			continue
		}
		img := strings.TrimPrefix(name, "images.")
		pi, ok := p.Images[img]
		if !ok {
			return nil, fmt.Errorf("%w %q: not an image%s or node name", ErrUnknownTarget, name, knownImages(p))
		}
		own := map[string]bool{}
		for _, id := range append(slices.Clone(pi.Outputs), pi.Hooks...) {
			own[id] = true
		}
		prefix := "images." + img + "."
		for _, n := range p.Nodes {
			if own[n.ID] || n.Kind == plan.KindStage && nodeOf(n, prefix) {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// nodeOf reports whether n's name or an alias (a node shared with another
// image) starts with prefix.
func nodeOf(n *plan.Node, prefix string) bool {
	if strings.HasPrefix(n.Name, prefix) {
		return true
	}
	for _, a := range n.Aliases {
		if strings.HasPrefix(a.Name, prefix) {
			return true
		}
	}
	return false
}

// knownImages lists the plan's images for a message, " (a, b)", or "" when
// it has none.
func knownImages(p *plan.Plan) string {
	names := imageNames(p)
	if len(names) == 0 {
		return ""
	}
	return " (" + strings.Join(names, ", ") + ")"
}

func imageNames(p *plan.Plan) []string {
	names := make([]string, 0, len(p.Images))
	for n := range p.Images {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
