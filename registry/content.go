package registry

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
)

// contents is what the registry needs of the local store: reading content by
// descriptor, adding content, trees, action entries and a directory for its
// own state. It is the one place that knows the store's API.
type contents interface {
	// fetch opens the content desc describes; the reader fails at its end
	// (instead of io.EOF) when the bytes do not match the size and digest.
	fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
	// has reports whether the content is present with desc's size.
	// has reports whether the store holds desc, pinning it to ctx's lease
	// (store.WithLease) when it does, so GC cannot take it before it is used.
	has(ctx context.Context, desc ocispec.Descriptor) bool
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
	return s.st.Fetch(ctx, desc)
}

func (s storeContents) has(ctx context.Context, desc ocispec.Descriptor) bool {
	ok, err := s.st.Exists(ctx, desc)
	return err == nil && ok
}

// put stores r's bytes as desc; a size or digest mismatch stores nothing.
func (s storeContents) put(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if err := s.st.Push(ctx, desc, r); err != nil {
		if errors.Is(err, store.ErrCorrupt) {
			return fmt.Errorf("content %s: %w: %v", desc.Digest, ErrDigest, err)
		}
		return err
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

func (s storeContents) stateDir(name string) (string, error) { return s.st.StateDir(name) }

func (s storeContents) tempDir(prefix string) (string, error) { return s.st.MkdirTemp(prefix) }

func (s storeContents) store() *store.Store { return s.st }
