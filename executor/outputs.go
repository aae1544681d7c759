package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/output"
	"github.com/strata-build/strata/executor/store"
)

// outputOptions are the options the compiler gives an output node.
type outputOptions struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// outputName returns the image an output node belongs to and the output's file
// name.
func outputName(n *plan.Node) (name, image string) {
	var o outputOptions
	_ = json.Unmarshal(n.Options, &o)
	image = strings.TrimPrefix(n.Name, "images.")
	if i := strings.LastIndex(image, ".outputs["); i >= 0 {
		image = image[:i]
	}
	if o.Name == "" {
		o.Name = image + "." + n.Type
	}
	return o.Name, image
}

// runOutput assembles the input tree into the artifact and stores it: a file
// artifact as a blob, an oci layout directory as a tree (Action.Tree) whose
// manifest digest is the output's digest, a tree output as the tree itself.
func (b *builder) runOutput(ctx context.Context, t *task) (nodeOutput, error) {
	n := t.n
	out := nodeOutput{exit: -1}
	st := b.opts.Store
	name, _ := outputName(n)
	var o outputOptions
	if len(n.Options) > 0 {
		if err := json.Unmarshal(n.Options, &o); err != nil {
			return out, fmt.Errorf("output options: %w", err)
		}
	}
	format := output.Format(n.Type)
	if format.MediaType() == "" {
		return out, fmt.Errorf("%w %q", output.ErrUnknownFormat, n.Type)
	}
	dt, err := b.dep(n.Inputs.Tree)
	if err != nil {
		return out, err
	}
	if format == output.FormatTree {
		p, err := st.BlobPath(dt.action.Tree)
		if err != nil {
			return out, err
		}
		info, err := os.Stat(p)
		if err != nil {
			return out, err
		}
		out.tree = dt.action.Tree
		out.outputs = map[string]digest.Digest{name: dt.action.Tree}
		out.meta = nodeMeta{Size: info.Size(), MediaType: format.MediaType()}
		return out, nil
	}
	tr, co, err := b.treeOf(ctx, n.Inputs.Tree)
	if err != nil {
		return out, fmt.Errorf("input tree: %w", err)
	}
	sde, _, err := epoch(n)
	if err != nil {
		return out, err
	}
	dir, err := b.work.mkdir("output-")
	if err != nil {
		return out, err
	}
	defer forceRemoveAll(dir)
	opts := output.Options{Format: format, SourceDateEpoch: sde, Size: o.Size, Checkout: co, TempDir: dir}
	if n.Platform != nil {
		opts.Platform = output.Platform{OS: n.Platform.OS, Architecture: n.Platform.Arch}
	}
	dst := filepath.Join(dir, name)
	r, err := output.Write(ctx, tr, st, opts, dst)
	if err != nil {
		return out, err
	}
	if format == output.FormatOCI {
		lt, ld, err := st.CommitDir(ctx, dst)
		if err != nil {
			return out, fmt.Errorf("store oci layout: %w", err)
		}
		if ld, err = b.normalizeOwners(ctx, lt, ld); err != nil {
			return out, err
		}
		out.tree = ld
	} else {
		f, err := os.Open(dst)
		if err != nil {
			return out, err
		}
		d, _, err := st.PutBlob(ctx, f)
		f.Close()
		if err != nil {
			return out, fmt.Errorf("store %s: %w", name, err)
		}
		if d != r.Digest {
			return out, fmt.Errorf("store %s: stored digest %s, output reported %s", name, d, r.Digest)
		}
	}
	out.outputs = map[string]digest.Digest{name: r.Digest}
	out.meta = nodeMeta{Size: r.Size, MediaType: r.MediaType}
	return out, nil
}

// artifactSource returns a host path holding an output node's artifact: the
// blob file, or a checkout of the tree (tree) or layout (oci).
func (b *builder) artifactSource(ctx context.Context, n *plan.Node, a *store.Action) (string, error) {
	name, _ := outputName(n)
	switch output.Format(n.Type) {
	case output.FormatTree, output.FormatOCI:
		return b.opts.Store.Checkout(ctx, a.Tree)
	}
	d, ok := a.Outputs[name]
	if !ok {
		return "", fmt.Errorf("action has no output %q", name)
	}
	return b.opts.Store.BlobPath(d)
}

// materialise puts an output node's artifact at OutDir/<image>/<name>: a hardlink
// of the stored blob (a copy across filesystems), a hardlinked copy of an oci
// layout, or a symbolic link to the tree's read-only checkout. An existing
// artifact there is replaced atomically.
func (b *builder) materialise(ctx context.Context, t *task, a *store.Action) error {
	n := t.n
	name, image := outputName(n)
	dir := filepath.Join(b.opts.OutDir, image)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("out dir: %w", err)
	}
	dst := filepath.Join(dir, name)
	src, err := b.artifactSource(ctx, n, a)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, ".tmp-"+name+"-"+n.ID[:12])
	forceRemoveAll(tmp)
	switch output.Format(n.Type) {
	case output.FormatTree:
		if cur, err := os.Readlink(dst); err == nil && cur == src {
			return nil
		}
		if err := os.Symlink(src, tmp); err != nil {
			return err
		}
	case output.FormatOCI:
		if err := linkTree(src, tmp); err != nil {
			forceRemoveAll(tmp)
			return fmt.Errorf("materialise %s: %w", name, err)
		}
		if info, err := os.Lstat(dst); err == nil && info.IsDir() {
			// rename cannot replace a non-empty directory: move it aside first.
			old := dst + ".old-" + n.ID[:12]
			forceRemoveAll(old)
			if err := os.Rename(dst, old); err != nil {
				forceRemoveAll(tmp)
				return err
			}
			defer forceRemoveAll(old)
		}
	default:
		if same(src, dst) {
			return nil
		}
		if err := linkOrCopy(src, tmp); err != nil {
			return fmt.Errorf("materialise %s: %w", name, err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		forceRemoveAll(tmp)
		return fmt.Errorf("materialise %s: %w", name, err)
	}
	return nil
}

func same(a, b string) bool {
	ia, err1 := os.Stat(a)
	ib, err2 := os.Lstat(b)
	return err1 == nil && err2 == nil && os.SameFile(ia, ib)
}

// linkOrCopy hardlinks src to dst, copying when they are on different filesystems.
func linkOrCopy(src, dst string) error {
	err := os.Link(src, dst)
	if err == nil || !(errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM)) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, in); err != nil {
		f.Close()
		os.Remove(dst)
		return err
	}
	return f.Close()
}

// linkTree recreates the directory src at dst with hardlinked files.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		default:
			return linkOrCopy(p, target)
		}
	})
}

// artifact describes a finished output node for the Result.
func (b *builder) artifact(t *task) Artifact {
	n := t.n
	name, image := outputName(n)
	m := readMeta(t.action)
	return Artifact{
		Image: image, Name: name, Format: n.Type, Node: n.Name,
		Path:   filepath.Join(b.opts.OutDir, image, name),
		Digest: t.action.Outputs[name], Size: m.Size, MediaType: output.Format(n.Type).MediaType(),
	}
}
