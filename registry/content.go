package registry

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
)

// contents is what the registry needs of the local store: reading content by
// descriptor, adding content, trees, action entries and a directory for its
// own state. It is the one place that knows the store's API (a descriptor API
// with Fetch/Push/Exists and StateDir is on its way; switching is here).
type contents interface {
	// fetch opens the content desc describes; the reader fails at its end
	// (instead of io.EOF) when the bytes do not match the size and digest.
	fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
	// has reports whether the content is present with desc's size.
	has(desc ocispec.Descriptor) bool
	// put stores r's bytes, which must hash to desc.Digest.
	put(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error
	// path is a local file holding the content, to be read and never written.
	path(desc ocispec.Descriptor) (string, error)
	getTree(ctx context.Context, d digest.Digest) (*tree.Tree, error)
	putTree(ctx context.Context, t *tree.Tree) (digest.Digest, error)
	getAction(ctx context.Context, key string) (*store.Action, error)
	putAction(ctx context.Context, a *store.Action) error
	// stateDir is a directory for the registry's own state (the local OCI
	// layouts, remembered registry quirks), created if missing.
	stateDir(name string) (string, error)
	// tempDir is a fresh scratch directory on the store's filesystem.
	tempDir(prefix string) (string, error)
	// store is the underlying store, for executor/output.
	store() *store.Store
}

// storeContents adapts *store.Store to contents.
type storeContents struct{ st *store.Store }

var _ contents = storeContents{}

func (s storeContents) fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, err := s.st.OpenBlobSize(desc.Digest, desc.Size)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (s storeContents) has(desc ocispec.Descriptor) bool {
	if !s.st.HasBlob(desc.Digest) {
		return false
	}
	p, err := s.st.BlobPath(desc.Digest)
	if err != nil {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Size() == desc.Size
}

func (s storeContents) put(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	v := desc.Digest.Verifier()
	d, n, err := s.st.PutBlob(ctx, io.TeeReader(r, v))
	if err != nil {
		return err
	}
	if d != desc.Digest || n != desc.Size {
		// PutBlob has stored what it read under its own digest, which is
		// harmless content-addressed garbage for GC; report the mismatch.
		return fmt.Errorf("content %s: %w: got %s (%d bytes)", desc.Digest, ErrDigest, d, n)
	}
	return nil
}

func (s storeContents) path(desc ocispec.Descriptor) (string, error) {
	return s.st.BlobPath(desc.Digest)
}

func (s storeContents) getTree(ctx context.Context, d digest.Digest) (*tree.Tree, error) {
	return s.st.GetTree(ctx, d)
}

func (s storeContents) putTree(ctx context.Context, t *tree.Tree) (digest.Digest, error) {
	return s.st.PutTree(ctx, t)
}

func (s storeContents) getAction(ctx context.Context, key string) (*store.Action, error) {
	return s.st.GetAction(ctx, key)
}

func (s storeContents) putAction(ctx context.Context, a *store.Action) error {
	return s.st.PutAction(ctx, a)
}

// stateDir is <store>/<name> until the store offers StateDir.
func (s storeContents) stateDir(name string) (string, error) {
	d := filepath.Join(s.st.Dir(), name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", fmt.Errorf("store %s: %w", s.st.Dir(), err)
	}
	return d, nil
}

func (s storeContents) tempDir(prefix string) (string, error) { return s.st.MkdirTemp(prefix) }

func (s storeContents) store() *store.Store { return s.st }
