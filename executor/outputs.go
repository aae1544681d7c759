package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/output"
	"github.com/strata-build/strata/executor/store"
)

// outputName returns an output node's file name and its image: the node's
// name option, or <image>.<format> with the last segment of the image name.
// image is the image the output is exported for (a node shared by two images
// is one node); empty means the image the node's own name says.
func outputName(n *plan.Node, image string) (name, img string) {
	var o plan.OutputOptions
	_ = json.Unmarshal(n.Options, &o)
	if image == "" {
		image = strings.TrimPrefix(n.Name, "images.")
		if i := strings.LastIndex(image, ".outputs["); i >= 0 {
			image = image[:i]
		}
	}
	if o.Name == "" {
		o.Name = path.Base(image) + "." + n.Type
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
	name, _ := outputName(n, "")
	po, err := output.DecodePlanOptions(n.Options)
	if err != nil {
		return out, err
	}
	format := output.Format(n.Type)
	if format.MediaType() == "" {
		return out, fmt.Errorf("%w %q", output.ErrUnknownFormat, n.Type)
	}
	if format == output.FormatTree {
		d, err := b.treeDigest(ctx, n.Inputs.Tree)
		if err != nil {
			return out, err
		}
		p, err := st.BlobPath(d)
		if err != nil {
			return out, err
		}
		info, err := os.Stat(p)
		if err != nil {
			return out, err
		}
		out.tree = d
		out.outputs = map[string]digest.Digest{name: d}
		out.meta = nodeMeta{Size: info.Size(), MediaType: format.MediaType()}
		return out, nil
	}
	tr, co, err := b.treeOf(ctx, n.Inputs.Tree)
	if err != nil {
		return out, fmt.Errorf("input tree: %w", err)
	}
	if readsCheckout(format) {
		// mksquashfs and mkfs read the checkout's files, not the store's
		// verifying reader: their bytes are checked first.
		if err := b.checkedCheckout(ctx, n.Inputs.Tree); err != nil {
			return out, fmt.Errorf("input tree: %w; run strata cache verify to set it aside, then build again", err)
		}
	}
	sde, _, err := epoch(n)
	if err != nil {
		return out, err
	}
	dir, err := b.opts.Store.MkdirTemp("output-")
	if err != nil {
		return out, err
	}
	defer forceRemoveAll(dir)
	opts := output.Options{Format: format, SourceDateEpoch: sde, Checkout: co, TempDir: dir}
	po.Apply(&opts)
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
		// Linked, not copied: an artifact is often large, and an ext4 image
		// sparse.
		d, _, err := st.LinkFile(ctx, dst, 0o444, 0, 0)
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

// readsCheckout reports whether the format's assembler is a tool that reads the
// tree's files from a checkout (the others read blobs through the store).
func readsCheckout(f output.Format) bool {
	return f == output.FormatSquashfs || f == output.FormatExt4 || f == output.FormatErofs
}

// checkedCheckout hashes the checkout of a dependency's tree against its
// manifest once per build.
func (b *builder) checkedCheckout(ctx context.Context, id string) error {
	d, err := b.treeDigest(ctx, id)
	if err != nil {
		return err
	}
	once, _ := b.checked.LoadOrStore(d, &onceErr{})
	o := once.(*onceErr)
	o.once.Do(func() { o.err = b.opts.Store.CheckCheckout(ctx, d, true) })
	return o.err
}

// onceErr is the result of work done once.
type onceErr struct {
	once sync.Once
	err  error
}

// artifactSource returns a host path holding an output node's artifact: the
// blob file, or a checkout of the tree (tree) or layout (oci).
func (b *builder) artifactSource(ctx context.Context, n *plan.Node, a *store.Action) (string, error) {
	name, _ := outputName(n, "")
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
