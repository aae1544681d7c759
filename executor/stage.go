package executor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/builtin"
	"github.com/strata-build/strata/executor/sandbox"
	"github.com/strata-build/strata/executor/tree"
)

// runStage runs a stage in the sandbox over a copy-on-write view of its input
// tree and commits the changes as its tree.
func (r *LocalRunner) runStage(ctx context.Context, n *plan.Node, in Inputs) (Result, error) {
	host, err := r.sandboxHost(ctx, n)
	if err != nil {
		return Result{}, err
	}
	st := r.st
	argv, env, chroot, needBinary, err := r.stageCommand(n)
	if err != nil {
		return Result{}, err
	}
	dir, err := st.MkdirTemp("stage-")
	if err != nil {
		return Result{}, err
	}
	defer r.st.Discard(dir)
	var base *tree.Tree
	var lower string
	if n.Inputs.Tree != "" {
		if base, lower, err = r.treeOf(ctx, in, n.Inputs.Tree); err != nil {
			return Result{}, fmt.Errorf("input tree: %w", err)
		}
	} else {
		lower = filepath.Join(dir, "empty")
		if err := os.Mkdir(lower, 0o755); err != nil {
			return Result{}, err
		}
	}
	root, err := r.buildRoot(ctx, n, in)
	if err != nil {
		return Result{}, err
	}
	inputs, err := r.mounts(ctx, n, in)
	if err != nil {
		return Result{}, err
	}
	sde, nodeEnv, err := epoch(n)
	if err != nil {
		return Result{}, err
	}
	maps.Copy(nodeEnv, env)
	upper := filepath.Join(dir, "upper")
	if err := os.Mkdir(upper, 0o755); err != nil {
		return Result{}, err
	}
	spec := sandbox.Spec{
		Root: root, Lower: []string{lower}, Upper: upper, Inputs: inputs,
		Options: n.Options, Command: argv, Env: nodeEnv, SourceDateEpoch: sde,
		Network: n.Network, Chroot: chroot,
	}
	var journal string
	if needBinary {
		spec.Binary = r.opts.Binary
		if journal, err = r.builtinChannel(ctx, n, in, dir, base, &spec); err != nil {
			return Result{}, err
		}
	} else if r.euid != 0 {
		if err := r.rootlessCommandCheck(ctx, n, in, base); err != nil {
			return Result{}, err
		}
		spec.WatchOwners = true
	}
	if len(spec.Options) == 0 {
		spec.Options = []byte("{}")
	}
	res, err := r.sandboxed(ctx, n, host, dir, spec)
	if err != nil {
		var oc *sandbox.OwnerChangeError
		if errors.As(err, &oc) {
			err = fmt.Errorf("%w: %v", ErrRootlessOwners, oc)
		}
		return res, r.commandError(n, res, err)
	}
	var recs builtin.Records
	if journal != "" {
		if recs, err = builtin.ReadRecordsFile(journal); err != nil {
			return Result{}, err
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
		return Result{}, err
	}
	if d, err = r.normalizeOwners(ctx, nt, d); err != nil {
		return Result{}, err
	}
	if r.euid != 0 && base != nil && keepBaseOwners(nt, base, recs) {
		if d, err = st.PutTree(ctx, nt); err != nil {
			return Result{}, err
		}
	}
	if recs.Apply(nt) {
		if d, err = st.PutTree(ctx, nt); err != nil {
			return Result{}, err
		}
	}
	res.Tree, err = r.treeDesc(d)
	return res, err
}

// builtinChannel sets spec up for a built-in stage to say what its sandbox
// cannot hold (builtin.RecordsEnv): an empty journal bound read-write, and the
// manifests of its tree and inputs bound read-only, so the stage reads owners
// as the store holds them. It returns the journal's host path.
func (r *LocalRunner) builtinChannel(ctx context.Context, n *plan.Node, in Inputs, dir string, base *tree.Tree, spec *sandbox.Spec) (string, error) {
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
		d, err := r.treeDigest(ctx, in, id)
		if err != nil {
			return "", err
		}
		t, err := r.st.GetTree(ctx, d)
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
func (r *LocalRunner) rootlessCommandCheck(ctx context.Context, n *plan.Node, in Inputs, base *tree.Tree) error {
	trees := map[string]*tree.Tree{"its tree": base}
	if br := n.Inputs.BuildRoot; br != "" && br != plan.HostRoot {
		d, err := r.treeDigest(ctx, in, br)
		if err != nil {
			return err
		}
		if trees["its build root"], err = r.st.GetTree(ctx, d); err != nil {
			return err
		}
	}
	for name, id := range n.Inputs.Mounts {
		d, err := r.treeDigest(ctx, in, id)
		if err != nil {
			return err
		}
		if trees["input "+name], err = r.st.GetTree(ctx, d); err != nil {
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
func (r *LocalRunner) normalizeOwners(ctx context.Context, t *tree.Tree, d digest.Digest) (digest.Digest, error) {
	if r.euid == 0 {
		return d, nil
	}
	changed := false
	for i := range t.Entries {
		e := &t.Entries[i]
		if e.UID == r.euid {
			e.UID, changed = 0, true
		}
		if e.GID == r.egid {
			e.GID, changed = 0, true
		}
	}
	if !changed {
		return d, nil
	}
	return r.st.PutTree(ctx, t)
}
