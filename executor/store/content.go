package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// TreeMediaType is the media type of a tree manifest (tree.Tree's canonical
// encoding), as compiler/plan.OutputFormats gives it for the tree format.
const TreeMediaType = "application/vnd.strata.tree.v1+json"

// kindOf is what a lease keeps for content of the media type.
func kindOf(mediaType string) leaseKind {
	if mediaType == TreeMediaType {
		return kindTree
	}
	return kindBlob
}

// Fetch opens the content desc describes. The reader checks the size and
// digest and reports an error wrapping ErrCorrupt instead of io.EOF when they
// do not match (see OpenBlobSize; a negative size is not checked). Missing
// content is an error wrapping ErrNotFound that names the digest. With a lease
// (see WithLease) the content is added to it first.
func (s *Store) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	hex, err := checkDigest(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("store %s: fetch: %w", s.dir, err)
	}
	if err := s.pin(ctx, kindOf(desc.MediaType), hex); err != nil {
		return nil, err
	}
	r, err := s.OpenBlobSize(desc.Digest, desc.Size)
	if err != nil {
		return nil, fmt.Errorf("store %s: fetch: %w", s.dir, err)
	}
	return r, nil
}

// Exists reports whether the content desc describes is in the store with its
// size (a negative size is not checked). Content it reports present is added
// to the call's lease (see WithLease) first, so it stays.
func (s *Store) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	hex, err := checkDigest(desc.Digest)
	if err != nil {
		return false, fmt.Errorf("store %s: exists: %w", s.dir, err)
	}
	if err := s.pin(ctx, kindOf(desc.MediaType), hex); err != nil {
		return false, err
	}
	var st unix.Stat_t
	if unix.Stat(s.blobPath(hex), &st) != nil {
		return false, nil
	}
	if desc.Size >= 0 && st.Size != desc.Size {
		return false, nil
	}
	return s.HasBlob(desc.Digest), nil
}

// Push stores the content read from r as desc describes it, checking its size
// and digest as it writes: a mismatch stores nothing and is an error wrapping
// ErrCorrupt. Pushing content that is already there is not an error: r is read
// to its end and discarded. With a lease (see WithLease) the content is added
// to it.
func (s *Store) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	hex, err := checkDigest(desc.Digest)
	if err != nil {
		return fmt.Errorf("store %s: push: %w", s.dir, err)
	}
	kind := kindOf(desc.MediaType)
	if ok, err := s.pinExisting(ctx, kind, hex, s.blobPath(hex), desc.Size); err != nil {
		return fmt.Errorf("store %s: push %s: %w", s.dir, desc.Digest, err)
	} else if ok && s.HasBlob(desc.Digest) {
		// Drained so a caller that streams from elsewhere sees the same end as
		// after a real push.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return fmt.Errorf("store %s: push %s: %w", s.dir, desc.Digest, err)
		}
		return nil
	}
	if _, _, err := s.putBlob(ctx, kind, r, desc.Digest, desc.Size); err != nil {
		return fmt.Errorf("store %s: push %s: %w", s.dir, desc.Digest, err)
	}
	return nil
}

// Ingest stores the content read from r, whose digest is not known in advance
// (a log, an artifact stream), and returns its descriptor with mediaType. With
// a lease (see WithLease) the content is added to it.
func (s *Store) Ingest(ctx context.Context, mediaType string, r io.Reader) (ocispec.Descriptor, error) {
	d, n, err := s.putBlob(ctx, kindOf(mediaType), r, "", -1)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("store %s: ingest: %w", s.dir, err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: n}, nil
}

// AddFile moves the finished regular file at path into the store as a blob
// and returns its descriptor with mediaType. It consumes the file: afterwards
// path no longer exists. A file on the store's filesystem with no other
// hardlink is renamed, not copied, so it keeps its holes (an ext4 image is
// mostly holes); otherwise it is copied, skipping runs of zeros. The file must
// not change while AddFile runs. With a lease (see WithLease) the content is
// added to it.
func (s *Store) AddFile(ctx context.Context, path, mediaType string) (ocispec.Descriptor, error) {
	desc, err := s.addFile(ctx, path, mediaType)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("store %s: add %s: %w", s.dir, path, err)
	}
	return desc, nil
}

func (s *Store) addFile(ctx context.Context, path, mediaType string) (ocispec.Descriptor, error) {
	f, err := openFile(path, unix.O_NOFOLLOW)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer f.Close()
	var st0 unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st0); err != nil {
		return ocispec.Descriptor{}, err
	}
	if st0.Mode&unix.S_IFMT != unix.S_IFREG {
		return ocispec.Descriptor{}, fmt.Errorf("%w: not a regular file", ErrUnsupported)
	}
	synced := syncBehind(f, st0.Size)
	d, n, err := hashFile(ctx, f)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var st1 unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st1); err != nil {
		return ocispec.Descriptor{}, err
	}
	if st1.Size != n || st1.Mtim != st0.Mtim || st1.Size != st0.Size {
		return ocispec.Descriptor{}, errors.New("file changed while it was hashed")
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: n}
	hex := d.Encoded()
	kind := kindOf(mediaType)
	final := s.blobPath(hex)
	if ok, err := s.pinExisting(ctx, kind, hex, final, n); err != nil {
		return desc, err
	} else if ok {
		return desc, removeIfExists(path)
	}
	if err := ensureShard(filepath.Dir(final)); err != nil {
		return desc, err
	}
	// A file with another name could be changed through it: copy it.
	tmp := ""
	if st1.Nlink == 1 {
		tmp, err = s.tempName("a-")
		if err != nil {
			return desc, err
		}
		if err = synced(); err == nil {
			err = f.Chmod(0o444)
		}
		if err == nil {
			err = os.Rename(path, tmp)
		}
		if errors.Is(err, unix.EXDEV) {
			tmp = ""
		} else if err != nil {
			return desc, err
		}
	}
	if tmp == "" {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return desc, err
		}
		if tmp, err = s.sparseCopyToTemp(f, d, n); err != nil {
			return desc, err
		}
		if err := removeIfExists(path); err != nil {
			os.Remove(tmp)
			return desc, err
		}
	}
	placed, err := s.place(ctx, kind, hex, tmp, final, n)
	if !placed {
		os.Remove(tmp)
	}
	if err != nil || !placed {
		return desc, err
	}
	return desc, syncDir(filepath.Dir(final))
}

// sparseCopyToTemp copies r, which must hash to d, into a new synced read-only
// temporary file, leaving blocks of zeros as holes, and returns its path.
func (s *Store) sparseCopyToTemp(r io.Reader, d digest.Digest, n int64) (string, error) {
	t, err := s.tempFile("a-*")
	if err != nil {
		return "", err
	}
	tmp := t.Name()
	ok := false
	defer func() {
		t.Close()
		if !ok {
			os.Remove(tmp)
		}
	}()
	verifier := d.Verifier()
	sw := &sparseWriter{f: t}
	bp := getBuf()
	defer putBuf(bp)
	copied, err := io.CopyBuffer(io.MultiWriter(sw, verifier), readerOnly{r}, *bp)
	if err != nil {
		return "", err
	}
	if copied != n || !verifier.Verified() {
		return "", fmt.Errorf("copy of %s: %w: content changed", d, ErrCorrupt)
	}
	if err := sw.finish(); err != nil {
		return "", err
	}
	if err := t.Chmod(0o444); err != nil {
		return "", err
	}
	if err := t.Sync(); err != nil {
		return "", err
	}
	ok = true
	return tmp, nil
}

// PutTreeDesc stores the tree t (see PutTree) and returns its descriptor.
func (s *Store) PutTreeDesc(ctx context.Context, t *tree.Tree) (ocispec.Descriptor, error) {
	return s.putTree(ctx, t, nil)
}

// putTree is PutTreeDesc of a tree whose new objects' directories (pending,
// see linkFiles) still need a sync.
func (s *Store) putTree(ctx context.Context, t *tree.Tree, pending []string) (ocispec.Descriptor, error) {
	b, err := t.Encode()
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("store %s: put tree: %w", s.dir, err)
	}
	d, n, err := s.putBlobAfter(ctx, kindTree, bytes.NewReader(b), "", -1, pending)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("store %s: put tree: %w", s.dir, err)
	}
	s.cacheTree(d, t)
	return ocispec.Descriptor{MediaType: TreeMediaType, Digest: d, Size: n}, nil
}

// GetTreeDesc reads the tree desc describes (see GetTree). A descriptor of
// another media type is refused; a size that differs from the stored
// manifest's is an error wrapping ErrCorrupt.
func (s *Store) GetTreeDesc(ctx context.Context, desc ocispec.Descriptor) (*tree.Tree, error) {
	if desc.MediaType != "" && desc.MediaType != TreeMediaType {
		return nil, fmt.Errorf("store %s: get tree %s: media type %q is not %s", s.dir, desc.Digest, desc.MediaType, TreeMediaType)
	}
	t, err := s.GetTree(ctx, desc.Digest)
	if err != nil {
		return nil, err
	}
	if desc.Size >= 0 {
		var st unix.Stat_t
		if err := unix.Stat(s.blobPath(desc.Digest.Encoded()), &st); err == nil && st.Size != desc.Size {
			return nil, fmt.Errorf("store %s: tree %s: %w: size %d, want %d", s.dir, desc.Digest, ErrCorrupt, st.Size, desc.Size)
		}
	}
	return t, nil
}
