package executor

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/output"
)

// runOutput assembles the input tree into the artifact named n.Artifact and
// stores it: a file artifact as a blob; an oci layout directory as a tree
// (Result.Tree) whose image manifest is the artifact; a tree output is the tree
// itself.
func (r *LocalRunner) runOutput(ctx context.Context, n *plan.Node, in Inputs) (Result, error) {
	st := r.st
	name := n.Artifact
	po, err := output.DecodePlanOptions(n.Options)
	if err != nil {
		return Result{}, err
	}
	format := output.Format(n.Type)
	if format.MediaType() == "" {
		return Result{}, fmt.Errorf("%w %q", output.ErrUnknownFormat, n.Type)
	}
	if format == output.FormatTree {
		d, err := r.treeDigest(ctx, in, n.Inputs.Tree)
		if err != nil {
			return Result{}, err
		}
		desc, err := r.treeDesc(d)
		if err != nil {
			return Result{}, err
		}
		return Result{Tree: desc, Outputs: map[string]ocispec.Descriptor{name: desc}}, nil
	}
	tr, co, err := r.treeOf(ctx, in, n.Inputs.Tree)
	if err != nil {
		return Result{}, fmt.Errorf("input tree: %w", err)
	}
	if readsCheckout(format) {
		// mksquashfs and mkfs read the checkout's files, not the store's
		// verifying reader: their bytes are checked first.
		if err := r.checkedCheckout(ctx, in, n.Inputs.Tree); err != nil {
			return Result{}, fmt.Errorf("input tree: %w; run strata cache verify to set it aside, then build again", err)
		}
	}
	sde, _, err := epoch(n)
	if err != nil {
		return Result{}, err
	}
	dir, err := st.MkdirTemp("output-")
	if err != nil {
		return Result{}, err
	}
	defer r.st.Discard(dir)
	opts := output.Options{Format: format, SourceDateEpoch: sde, Checkout: co, TempDir: dir}
	po.Apply(&opts)
	if n.Platform != nil {
		opts.Platform = output.Platform{OS: n.Platform.OS, Architecture: n.Platform.Arch}
	}
	dst := filepath.Join(dir, name)
	w, err := output.Write(ctx, tr, st, opts, dst)
	if err != nil {
		return Result{}, err
	}
	res := Result{Outputs: map[string]ocispec.Descriptor{name: {MediaType: w.MediaType, Digest: w.Digest, Size: w.Size}}}
	if format == output.FormatOCI {
		lt, ld, err := st.CommitDir(ctx, dst)
		if err != nil {
			return Result{}, fmt.Errorf("store oci layout: %w", err)
		}
		if ld, err = r.normalizeOwners(ctx, lt, ld); err != nil {
			return Result{}, err
		}
		res.Tree, err = r.treeDesc(ld)
		return res, err
	}
	// Moved in, not copied: an artifact is often large, and an ext4 image
	// sparse.
	desc, err := st.AddFile(ctx, dst, w.MediaType)
	if err != nil {
		return Result{}, fmt.Errorf("store %s: %w", name, err)
	}
	if desc.Digest != w.Digest || desc.Size != w.Size {
		return Result{}, fmt.Errorf("store %s: stored %s (%d bytes), the assembler reported %s (%d bytes)", name, desc.Digest, desc.Size, w.Digest, w.Size)
	}
	return res, nil
}

// readsCheckout reports whether the format's assembler is a tool that reads the
// tree's files from a checkout (the others read blobs through the store).
func readsCheckout(f output.Format) bool {
	return f == output.FormatSquashfs || f == output.FormatExt4 || f == output.FormatErofs
}

// checkedCheckout hashes the checkout of a dependency's tree against its
// manifest, once per tree for the runner's life.
func (r *LocalRunner) checkedCheckout(ctx context.Context, in Inputs, id string) error {
	d, err := r.treeDigest(ctx, in, id)
	if err != nil {
		return err
	}
	once, _ := r.checked.LoadOrStore(d, &onceErr{})
	o := once.(*onceErr)
	o.once.Do(func() { o.err = r.st.CheckCheckout(ctx, d, true) })
	return o.err
}

// onceErr is the result of work done once.
type onceErr struct {
	once sync.Once
	err  error
}

func sortedDigests(ds []digest.Digest) []digest.Digest {
	out := slices.Clone(ds)
	slices.Sort(out)
	return slices.Compact(out)
}
