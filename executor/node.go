package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/builtin"
	"github.com/strata-build/strata/executor/sandbox"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
)

// nodeOutput is what running a node produced.
type nodeOutput struct {
	tree    digest.Digest
	log     digest.Digest
	outputs map[string]digest.Digest
	meta    nodeMeta
	// exit is the command's exit status (-1 when none) and tail the end of its log,
	// for a NodeError.
	exit int
	tail string
}

// exitError is a command that exited with a non-zero status.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// nodeMeta is the Meta of an action.
type nodeMeta struct {
	// Name is the node's name when it was built, for "strata cache ls".
	Name string `json:"name,omitempty"`
	// File names the single file of a file source's tree.
	File string `json:"file,omitempty"`
	// Size and MediaType describe an output artifact.
	Size      int64  `json:"size,omitempty"`
	MediaType string `json:"media_type,omitempty"`
	// Warning is what a hook with on_failure "warn" said when it failed; a
	// cached result says it again.
	Warning string `json:"warning,omitempty"`
}

func readMeta(a *store.Action) nodeMeta {
	var m nodeMeta
	if len(a.Meta) > 0 {
		_ = json.Unmarshal(a.Meta, &m)
	}
	return m
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// epoch returns the node's SOURCE_DATE_EPOCH and the rest of its environment.
func epoch(n *plan.Node) (int64, map[string]string, error) {
	var e int64
	env := map[string]string{}
	for k, v := range n.Env {
		if k == "SOURCE_DATE_EPOCH" {
			var err error
			if e, err = strconv.ParseInt(v, 10, 64); err != nil || e < 0 {
				return 0, nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a non-negative integer", v)
			}
			continue
		}
		env[k] = v
	}
	return e, env, nil
}

// logWriter keeps a node's complete output in a file, reports it line by line
// as events and remembers the last lines for errors.
type logWriter struct {
	f       *os.File
	emit    func(line string)
	partial []byte
	tail    []string
}

const maxEventLine = 4096

func newLogWriter(path string, emit func(string)) (*logWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &logWriter{f: f, emit: emit}, nil
}

func (l *logWriter) Write(p []byte) (int, error) {
	n, err := l.f.Write(p)
	if err != nil {
		return n, err
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			if len(l.partial) > maxEventLine {
				l.line(l.partial)
				l.partial = l.partial[:0]
			}
			break
		}
		l.line(append(l.partial, p[:i]...))
		l.partial = l.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (l *logWriter) line(b []byte) {
	if len(b) > maxEventLine {
		b = b[:maxEventLine]
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	l.tail = append(l.tail, s)
	if len(l.tail) > 2*LogTailLines {
		l.tail = append(l.tail[:0], l.tail[len(l.tail)-LogTailLines:]...)
	}
	if l.emit != nil {
		l.emit(s)
	}
}

// finish flushes a last unterminated line, stores the log as a blob and returns
// its digest and tail.
func (l *logWriter) finish(ctx context.Context, st *store.Store) (digest.Digest, string, error) {
	if len(l.partial) > 0 {
		l.line(l.partial)
		l.partial = nil
	}
	tail := l.tail
	if len(tail) > LogTailLines {
		tail = tail[len(tail)-LogTailLines:]
	}
	defer l.f.Close()
	if _, err := l.f.Seek(0, io.SeekStart); err != nil {
		return "", strings.Join(tail, "\n"), err
	}
	d, _, err := st.PutBlob(ctx, l.f)
	return d, strings.Join(tail, "\n"), err
}

func (b *builder) newLog(t *task, dir string) (*logWriter, error) {
	return newLogWriter(filepath.Join(dir, "log"), func(line string) {
		ev := b.event(t, EventLog)
		ev.Line = line
		b.ev.emit(ev)
	})
}

// treeOf returns the tree of a finished dependency and its checkout.
func (b *builder) treeOf(ctx context.Context, id string) (*tree.Tree, string, error) {
	co, d, err := b.checkoutOf(ctx, id)
	if err != nil {
		return nil, "", err
	}
	t, err := b.opts.Store.GetTree(ctx, d)
	if err != nil {
		return nil, "", err
	}
	return t, co, nil
}

// checkoutOf returns the checkout of a finished dependency's tree and the tree's
// digest, without reading its manifest (build roots and mounts need only the files).
func (b *builder) checkoutOf(ctx context.Context, id string) (string, digest.Digest, error) {
	d, err := b.treeDigest(ctx, id)
	if err != nil {
		return "", "", err
	}
	co, err := b.opts.Store.Checkout(ctx, d)
	if err != nil {
		return "", "", err
	}
	return co, d, nil
}

// treeDigest returns the tree of a finished dependency; "" is the empty tree
// (an image with no stages).
func (b *builder) treeDigest(ctx context.Context, id string) (digest.Digest, error) {
	if id == "" {
		return b.opts.Store.PutTree(ctx, &tree.Tree{})
	}
	dt, err := b.dep(id)
	if err != nil {
		return "", err
	}
	if dt.action.Tree == "" {
		return "", fmt.Errorf("%s has no tree", dt.n.Name)
	}
	return dt.action.Tree, nil
}

// buildRoot returns the sandbox root for the node's build root.
func (b *builder) buildRoot(ctx context.Context, n *plan.Node) (string, error) {
	if n.Inputs.BuildRoot == "" || n.Inputs.BuildRoot == plan.HostRoot {
		return sandbox.HostRoot, nil
	}
	co, _, err := b.checkoutOf(ctx, n.Inputs.BuildRoot)
	if err != nil {
		return "", fmt.Errorf("build root: %w", err)
	}
	return co, nil
}

// mounts returns the host paths of the node's named inputs: a checkout of a
// source's or image's tree, or the file itself for a single-file source.
func (b *builder) mounts(ctx context.Context, n *plan.Node) (map[string]string, error) {
	if len(n.Inputs.Mounts) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for name, id := range n.Inputs.Mounts {
		dt, err := b.dep(id)
		if err != nil {
			return nil, err
		}
		co, _, err := b.checkoutOf(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", name, err)
		}
		if f := readMeta(dt.action).File; f != "" {
			co = filepath.Join(co, f)
		}
		out[name] = co
	}
	return out, nil
}

// isBuiltin reports whether typ is a built-in stage type.
func (b *builder) isBuiltin(typ string) bool {
	if m, ok := b.plan.Stages[typ]; ok {
		return m.Builtin
	}
	_, ok := builtin.Info(typ)
	return ok
}

// stageCommand returns what a stage runs.
func (b *builder) stageCommand(n *plan.Node) (argv []string, env map[string]string, chroot, needBinary bool, err error) {
	switch {
	case n.Type == "strata.run":
		argv, env, chroot, err = builtin.RunCommand(n.Options)
		return argv, env, chroot, false, err
	case b.isBuiltin(n.Type):
		if b.opts.Binary == "" {
			return nil, nil, false, false, fmt.Errorf("built-in stage %s needs a static strata binary (Options.Binary)", n.Type)
		}
		return []string{sandbox.BinaryPath, "builtin", n.Type}, nil, false, true, nil
	case len(n.Command) > 0:
		return n.Command, nil, false, false, nil
	}
	return nil, nil, false, false, fmt.Errorf("stage type %s has no command", n.Type)
}

// runStage runs a stage in the sandbox over a copy-on-write view of its input
// tree and commits the changes.
func (b *builder) runStage(ctx context.Context, t *task) (nodeOutput, error) {
	n := t.n
	out := nodeOutput{exit: -1}
	host, err := b.sandboxHost(ctx, t)
	if err != nil {
		return out, err
	}
	st := b.opts.Store
	argv, env, chroot, needBinary, err := b.stageCommand(n)
	if err != nil {
		return out, err
	}
	dir, err := b.opts.Store.MkdirTemp("stage-")
	if err != nil {
		return out, err
	}
	defer forceRemoveAll(dir)
	var base *tree.Tree
	var lower string
	if n.Inputs.Tree != "" {
		if base, lower, err = b.treeOf(ctx, n.Inputs.Tree); err != nil {
			return out, fmt.Errorf("input tree: %w", err)
		}
	} else {
		lower = filepath.Join(dir, "empty")
		if err := os.Mkdir(lower, 0o755); err != nil {
			return out, err
		}
	}
	root, err := b.buildRoot(ctx, n)
	if err != nil {
		return out, err
	}
	inputs, err := b.mounts(ctx, n)
	if err != nil {
		return out, err
	}
	sde, nodeEnv, err := epoch(n)
	if err != nil {
		return out, err
	}
	for k, v := range env {
		nodeEnv[k] = v
	}
	upper := filepath.Join(dir, "upper")
	if err := os.Mkdir(upper, 0o755); err != nil {
		return out, err
	}
	spec := sandbox.Spec{
		Root: root, Lower: []string{lower}, Upper: upper, Inputs: inputs,
		Options: n.Options, Command: argv, Env: nodeEnv, SourceDateEpoch: sde,
		Network: n.Network, Chroot: chroot,
	}
	var journal string
	if needBinary {
		spec.Binary = b.opts.Binary
		if journal, err = b.builtinChannel(ctx, n, dir, base, &spec); err != nil {
			return out, err
		}
	} else if b.euid != 0 {
		if err := b.rootlessCommandCheck(ctx, n, base); err != nil {
			return out, err
		}
		spec.WatchOwners = true
	}
	if len(spec.Options) == 0 {
		spec.Options = []byte("{}")
	}
	if out, err = b.sandboxed(ctx, t, host, dir, spec); err != nil {
		var oc *sandbox.OwnerChangeError
		if errors.As(err, &oc) {
			err = fmt.Errorf("%w: %v", ErrRootlessOwners, oc)
		}
		return out, err
	}
	var recs builtin.Records
	if journal != "" {
		if recs, err = builtin.ReadRecordsFile(journal); err != nil {
			return out, err
		}
	}
	var nt *tree.Tree
	var d digest.Digest
	if host.Staging == sandbox.StagingCopy {
		// Copy staging leaves the complete tree in upper, deletions included.
		nt, d, err = st.CommitDir(ctx, upper)
	} else {
		nt, d, err = st.CommitUpper(ctx, base, upper)
	}
	if err != nil {
		return out, err
	}
	if d, err = b.normalizeOwners(ctx, nt, d); err != nil {
		return out, err
	}
	if b.euid != 0 && base != nil && keepBaseOwners(nt, base, recs) {
		if d, err = st.PutTree(ctx, nt); err != nil {
			return out, err
		}
	}
	if recs.Apply(nt) {
		if d, err = st.PutTree(ctx, nt); err != nil {
			return out, err
		}
	}
	out.tree = d
	return out, nil
}

// builtinChannel sets spec up for a built-in stage to say what its sandbox
// cannot hold (builtin.RecordsEnv): an empty journal bound read-write, and the
// manifests of its tree and inputs bound read-only, so the stage reads owners
// as the store holds them. It returns the journal's host path.
func (b *builder) builtinChannel(ctx context.Context, n *plan.Node, dir string, base *tree.Tree, spec *sandbox.Spec) (string, error) {
	journal := filepath.Join(dir, "records")
	if err := os.WriteFile(journal, nil, 0o600); err != nil {
		return "", err
	}
	man := filepath.Join(dir, "manifests")
	if err := os.MkdirAll(filepath.Join(man, "inputs"), 0o755); err != nil {
		return "", err
	}
	write := func(p string, t *tree.Tree) error {
		data, err := t.Encode()
		if err != nil {
			return err
		}
		return os.WriteFile(p, data, 0o444)
	}
	if base != nil {
		if err := write(filepath.Join(man, "tree.json"), base); err != nil {
			return "", err
		}
	}
	for name, id := range n.Inputs.Mounts {
		d, err := b.treeDigest(ctx, id)
		if err != nil {
			return "", err
		}
		t, err := b.opts.Store.GetTree(ctx, d)
		if err != nil {
			return "", err
		}
		if err := write(filepath.Join(man, "inputs", name+".json"), t); err != nil {
			return "", err
		}
	}
	spec.Binds = append(spec.Binds,
		sandbox.Bind{Source: journal, Target: builtin.RecordsPath, Writable: true},
		sandbox.Bind{Source: man, Target: builtin.ManifestsDir})
	spec.Env[builtin.RecordsEnv] = builtin.RecordsPath
	return journal, nil
}

// rootlessCommandCheck refuses a command stage (strata.run, a stage module)
// that a build without root cannot run as a root build would: in a user
// namespace that maps one id, every file of its trees looks like root's, so a
// command reading owners (tar, find -user, a package manager) would see other
// bytes than the same command as root, and the same key would stand for
// different content.
func (b *builder) rootlessCommandCheck(ctx context.Context, n *plan.Node, base *tree.Tree) error {
	trees := map[string]*tree.Tree{"its tree": base}
	if br := n.Inputs.BuildRoot; br != "" && br != plan.HostRoot {
		d, err := b.treeDigest(ctx, br)
		if err != nil {
			return err
		}
		if trees["its build root"], err = b.opts.Store.GetTree(ctx, d); err != nil {
			return err
		}
	}
	for name, id := range n.Inputs.Mounts {
		d, err := b.treeDigest(ctx, id)
		if err != nil {
			return err
		}
		if trees["input "+name], err = b.opts.Store.GetTree(ctx, d); err != nil {
			return err
		}
	}
	for _, what := range slices.Sorted(maps.Keys(trees)) {
		t := trees[what]
		if t == nil {
			continue
		}
		for _, e := range t.Entries {
			if e.UID != 0 || e.GID != 0 {
				return fmt.Errorf("%w: in %s, /%s belongs to %d:%d, and without root the command would see it as root's; build as root, or set such owners after the commands (strata.files, strata.copy with owner)",
					ErrRootlessOwners, what, e.Path, e.UID, e.GID)
			}
		}
	}
	return nil
}

// ErrRootlessOwners is wrapped when a command stage cannot run without root
// and give what it gives as root.
var ErrRootlessOwners = errors.New("a build without root cannot run this command as root would")

// keepBaseOwners gives the entries of nt that are in base with the same type,
// and whose owner the stage did not record, the base's owner. Without root a
// stage's copy-up (a directory it wrote into, a whole tree with copy staging)
// belongs to the user strata runs as, which normalizeOwners made root; as root
// copy-up keeps owners. It reports whether it changed nt.
func keepBaseOwners(nt, base *tree.Tree, recs builtin.Records) bool {
	changed := false
	for i := range nt.Entries {
		e := &nt.Entries[i]
		if r, ok := recs[e.Path]; ok && r.Owner != nil {
			continue
		}
		if be, ok := base.Lookup(e.Path); ok && be.Type == e.Type && (be.UID != e.UID || be.GID != e.GID) {
			e.UID, e.GID = be.UID, be.GID
			changed = true
		}
	}
	return changed
}

// normalizeOwners maps the ids of the user strata runs as to 0 when it is not
// root: in the sandbox's user namespace they are root, and files a stage creates
// belong to them on the host. As root it does nothing.
func (b *builder) normalizeOwners(ctx context.Context, t *tree.Tree, d digest.Digest) (digest.Digest, error) {
	if b.euid == 0 {
		return d, nil
	}
	changed := false
	for i := range t.Entries {
		e := &t.Entries[i]
		if e.UID == b.euid {
			e.UID, changed = 0, true
		}
		if e.GID == b.egid {
			e.GID, changed = 0, true
		}
	}
	if !changed {
		return d, nil
	}
	return b.opts.Store.PutTree(ctx, t)
}

// runJob runs a job's command in its build root with the image's tree (if any)
// as a throwaway copy-on-write tree. Its result is its log.
func (b *builder) runJob(ctx context.Context, t *task) (nodeOutput, error) {
	n := t.n
	out := nodeOutput{exit: -1}
	host, err := b.sandboxHost(ctx, t)
	if err != nil {
		return out, err
	}
	if len(n.Command) == 0 {
		return out, fmt.Errorf("job has no command")
	}
	dir, err := b.opts.Store.MkdirTemp("job-")
	if err != nil {
		return out, err
	}
	defer forceRemoveAll(dir)
	lower := filepath.Join(dir, "empty")
	if n.Inputs.Tree != "" {
		if lower, _, err = b.checkoutOf(ctx, n.Inputs.Tree); err != nil {
			return out, fmt.Errorf("image tree: %w", err)
		}
	} else if err := os.Mkdir(lower, 0o755); err != nil {
		return out, err
	}
	root, err := b.buildRoot(ctx, n)
	if err != nil {
		return out, err
	}
	sde, env, err := epoch(n)
	if err != nil {
		return out, err
	}
	upper := filepath.Join(dir, "upper")
	if err := os.Mkdir(upper, 0o755); err != nil {
		return out, err
	}
	return b.sandboxed(ctx, t, host, dir, sandbox.Spec{
		Root: root, Lower: []string{lower}, Upper: upper, Command: n.Command, Env: env,
		SourceDateEpoch: sde, Network: n.Network,
	})
}

// runHook runs a hook's command in its build root with the image's outputs
// read-only at /run/strata/outputs/<name> and an empty, throwaway tree.
func (b *builder) runHook(ctx context.Context, t *task) (nodeOutput, error) {
	n := t.n
	out := nodeOutput{exit: -1}
	host, err := b.sandboxHost(ctx, t)
	if err != nil {
		return out, err
	}
	var o struct {
		OnFailure string `json:"on_failure"`
	}
	if len(n.Options) > 0 {
		if err := json.Unmarshal(n.Options, &o); err != nil {
			return out, fmt.Errorf("hook options: %w", err)
		}
	}
	if len(n.Command) == 0 {
		return out, fmt.Errorf("hook has no command")
	}
	dir, err := b.opts.Store.MkdirTemp("hook-")
	if err != nil {
		return out, err
	}
	defer forceRemoveAll(dir)
	root, err := b.buildRoot(ctx, n)
	if err != nil {
		return out, err
	}
	outputs := map[string]string{}
	for _, id := range n.Inputs.After {
		dt, err := b.dep(id)
		if err != nil || dt.n.Kind != plan.KindOutput {
			continue
		}
		name, _ := outputName(dt.n, "")
		p, err := b.artifactSource(ctx, dt.n, dt.action)
		if err != nil {
			return out, fmt.Errorf("output %s: %w", name, err)
		}
		outputs[name] = p
	}
	sde, env, err := epoch(n)
	if err != nil {
		return out, err
	}
	treeDir := filepath.Join(dir, "tree")
	if err := os.Mkdir(treeDir, 0o755); err != nil {
		return out, err
	}
	out, err = b.sandboxed(ctx, t, host, dir, sandbox.Spec{
		Root: root, Tree: treeDir, Outputs: outputs, Command: n.Command, Env: env, SourceDateEpoch: sde,
	})
	if out.log != "" && n.Type == "cleanup" {
		// Cleanup hooks are never cached, so their log is kept under the node's ID.
		_ = putNodeLog(ctx, b.opts.Store, n.ID, out.log)
	}
	var exit *exitError
	if errors.As(err, &exit) && o.OnFailure == "warn" {
		ev := b.event(t, EventWarning)
		ev.Line = fmt.Sprintf("hook %s (%s) failed with exit status %d (on_failure: warn)", t.name, n.Origin, exit.code)
		b.ev.emit(ev)
		out.meta.Warning = ev.Line
		return out, nil
	}
	return out, err
}

// sandboxed runs spec with the process's output captured as the node's log, which
// is stored (and its tail kept) whatever the outcome. A non-zero exit is an
// *exitError.
func (b *builder) sandboxed(ctx context.Context, t *task, host *sandbox.Host, dir string, spec sandbox.Spec) (nodeOutput, error) {
	out := nodeOutput{exit: -1}
	lw, err := b.newLog(t, dir)
	if err != nil {
		return out, err
	}
	spec.Stdout, spec.Stderr, spec.MaxOutput = lw, lw, b.opts.MaxLogBytes
	b.applyLimits(t.n, &spec)
	code, runErr := sandbox.Run(ctx, host, spec)
	logD, tail, err := lw.finish(ctx, b.opts.Store)
	out.log, out.tail, out.exit = logD, tail, code
	if runErr != nil {
		if errors.Is(runErr, sandbox.ErrSetup) {
			// The host may have changed under the cached probe results.
			os.Remove(b.hostCache())
		}
		return out, runErr
	}
	if err != nil {
		return out, fmt.Errorf("store log: %w", err)
	}
	if code != 0 {
		return out, &exitError{code}
	}
	return out, nil
}
