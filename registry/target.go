package registry

import (
	"context"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// target is one repository: the local OCI layout's or a registry's. Content
// is addressed by descriptor; fetch returns the raw bytes and callers verify
// them (verify).
type target interface {
	// name is the repository for messages (host/repo or repo).
	name() string
	exists(ctx context.Context, desc ocispec.Descriptor) (bool, error)
	fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
	// push stores content that hashes to desc; a manifest is pushed by digest.
	push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error
	// tag points tag at the manifest or index desc, whose content is b.
	tag(ctx context.Context, desc ocispec.Descriptor, b []byte, tag string) error
	// resolve returns the descriptor a tag points at; ErrNotFound if none.
	resolve(ctx context.Context, tag string) (ocispec.Descriptor, error)
	// tags lists the repository's tags; none for a repository that does not exist.
	tags(ctx context.Context) ([]string, error)
}

// mounter is a target that can take a blob from another repository of the
// same registry without uploading it (cross-repository mount).
type mounter interface {
	mount(ctx context.Context, desc ocispec.Descriptor, from string) error
}

// maxManifestBytes caps manifests, indexes and configs strata reads: they are
// parsed in memory, so a hostile registry must not make strata read 100 MB
// (RELIABILITY row 14). Registries cap manifests at 4 MiB.
const maxManifestBytes = 4 << 20

// verifier checks a stream against a descriptor: not one byte more than its
// size, and at the end its size and digest.
type verifier struct {
	r    io.Reader
	desc ocispec.Descriptor
	h    hash.Hash
	n    int64
	err  error
	// progress, when set, is told the bytes read so far.
	progress func(n int64)
}

func newVerifier(r io.Reader, desc ocispec.Descriptor) *verifier {
	v := &verifier{r: r, desc: desc}
	// A descriptor no content can match fails the first read; the callers
	// check descriptors before this (checkDescriptor), this is the backstop.
	if err := checkDescriptor(desc, "descriptor"); err != nil {
		v.err = fmt.Errorf("%w: %v", ErrDigest, err)
	} else {
		v.h = desc.Digest.Algorithm().Hash()
	}
	return v
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if rest := v.desc.Size - v.n + 1; int64(len(p)) > rest {
		p = p[:rest] // one byte past the size is enough to see padding
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.progress != nil && n > 0 {
		v.progress(v.n)
	}
	switch {
	case v.n > v.desc.Size:
		v.err = fmt.Errorf("%w: more than %d bytes", ErrDigest, v.desc.Size)
		return 0, v.err
	case err == io.EOF:
		got := digest.NewDigest(v.desc.Digest.Algorithm(), v.h)
		switch {
		case v.n != v.desc.Size:
			v.err = fmt.Errorf("%w: %d bytes, want %d", ErrDigest, v.n, v.desc.Size)
		case got != v.desc.Digest:
			v.err = fmt.Errorf("%w: content hashes to %s", ErrDigest, got)
		default:
			v.err = io.EOF
		}
		return n, v.err
	case err != nil:
		v.err = err
	}
	return n, err
}

// readVerified reads the whole small document desc describes from t,
// refusing more than maxManifestBytes before reading it.
func readVerified(ctx context.Context, t target, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > maxManifestBytes || desc.Size < 0 {
		return nil, fmt.Errorf("%s %s: %w: %d bytes is over the %d-byte limit for manifests and configs", t.name(), desc.Digest, ErrInvalid, desc.Size, maxManifestBytes)
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", t.name(), ErrInvalid, err)
	}
	rc, err := t.fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(newVerifier(rc, desc))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", t.name(), desc.Digest, err)
	}
	return b, nil
}
