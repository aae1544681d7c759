package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/executor/tree"
	"golang.org/x/sys/unix"
)

// bufSize is the size of the buffers used for hashing and copying. Large reads keep
// hashing close to raw SHA-256 speed.
const bufSize = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

// checkDigest returns the hex of d if it is a valid sha256 digest.
func checkDigest(d digest.Digest) (string, error) {
	if tree.IsSHA256(d) {
		return d.Encoded(), nil
	}
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: %w", d, err)
	}
	return "", fmt.Errorf("digest %s: only sha256 is stored", d)
}

func (s *Store) blobPath(hex string) string {
	return filepath.Join(s.dir, dirBlobs, hex[:2], hex)
}

// BlobPath returns the path of the blob d, which must only be read, never written,
// chmod-ed or renamed. It does not check that the blob exists; reading the path
// directly skips the re-hashing that OpenBlob does.
func (s *Store) BlobPath(d digest.Digest) (string, error) {
	hex, err := checkDigest(d)
	if err != nil {
		return "", err
	}
	return s.blobPath(hex), nil
}

// HasBlob reports whether the blob d is present. It does not re-hash it.
func (s *Store) HasBlob(d digest.Digest) bool {
	hex, err := checkDigest(d)
	if err != nil {
		return false
	}
	var st unix.Stat_t
	return unix.Stat(s.blobPath(hex), &st) == nil && wholeBlob(d, st.Size)
}

// wholeBlob reports whether a blob file of size bytes can be d: a zero-length
// file can only be the empty blob (Nix #7064: torn files).
func wholeBlob(d digest.Digest, size int64) bool {
	return size > 0 || d == digest.SHA256.FromBytes(nil)
}

// PutBlob stores the bytes read from r and returns their digest and size. The blob is
// written to a temporary file, synced and renamed into place; if the blob is already
// present (with the right size) the new copy is discarded.
func (s *Store) PutBlob(ctx context.Context, r io.Reader) (digest.Digest, int64, error) {
	d, n, err := s.putBlob(ctx, kindBlob, r, "", -1)
	if err != nil {
		return "", 0, fmt.Errorf("store %s: put blob: %w", s.dir, err)
	}
	return d, n, nil
}

// PutBytes stores b as a blob and returns its digest.
func (s *Store) PutBytes(ctx context.Context, b []byte) (digest.Digest, error) {
	d, _, err := s.PutBlob(ctx, bytes.NewReader(b))
	return d, err
}

// putBlob stores what r yields. When want is set the bytes must hash to it and
// number size (if size >= 0), or the blob is refused with ErrCorrupt.
func (s *Store) putBlob(ctx context.Context, kind leaseKind, r io.Reader, want digest.Digest, size int64) (digest.Digest, int64, error) {
	return s.putBlobAfter(ctx, kind, r, want, size, nil)
}

// putBlobAfter is putBlob for a blob that refers to objects just placed whose
// directories (pending, see linkFiles) still need a sync: they are synced
// together with the blob's content, and before the blob has its name.
func (s *Store) putBlobAfter(ctx context.Context, kind leaseKind, r io.Reader, want digest.Digest, size int64, pending []string) (digest.Digest, int64, error) {
	h := sha256.New()
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	// Content that fits the buffer (logs, manifests, records) is hashed before
	// anything is written: a blob the store already has costs no file.
	if err := ctx.Err(); err != nil {
		return "", 0, err
	}
	m, rerr := io.ReadFull(r, buf)
	whole := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
	if rerr != nil && !whole {
		return "", 0, rerr
	}
	h.Write(buf[:m])
	n := int64(m)
	if whole {
		d := digest.NewDigest(digest.SHA256, h)
		if err := checkBlob(d, n, want, size); err != nil {
			return "", 0, err
		}
		if ok, err := s.pinExisting(ctx, kind, d.Encoded(), s.blobPath(d.Encoded()), n); err != nil || ok {
			if err == nil {
				err = syncTogether(dirSyncs(pending...)...)
			}
			return d, n, err
		}
	}
	f, err := s.tempFile("b-*")
	if err != nil {
		return "", 0, err
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		os.Remove(tmp) // no-op once renamed
	}()
	if _, err := f.Write(buf[:m]); err != nil {
		return "", 0, err
	}
	for !whole {
		if err := ctx.Err(); err != nil {
			return "", 0, err
		}
		m, rerr := r.Read(buf)
		if m > 0 {
			h.Write(buf[:m])
			if _, err := f.Write(buf[:m]); err != nil {
				return "", 0, err
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return "", 0, rerr
		}
	}
	d := digest.NewDigest(digest.SHA256, h)
	if err := checkBlob(d, n, want, size); err != nil {
		return "", 0, err
	}
	hex := d.Encoded()
	final := s.blobPath(hex)
	if ok, err := s.pinExisting(ctx, kind, hex, final, n); err != nil || ok {
		if err == nil {
			err = syncTogether(dirSyncs(pending...)...)
		}
		return d, n, err
	}
	if err := f.Chmod(0o444); err != nil {
		return "", 0, err
	}
	parent, err := makeShard(filepath.Dir(final))
	if err != nil {
		return "", 0, err
	}
	syncs := append(dirSyncs(pending...), dirSyncs(parent)...)
	if err := syncTogether(append(syncs, f.Sync)...); err != nil {
		return "", 0, err
	}
	err = f.Close()
	f = nil
	if err != nil {
		return "", 0, err
	}
	placed, err := s.place(ctx, kind, hex, tmp, final, n)
	if err != nil || !placed {
		return d, n, err
	}
	return d, n, syncDir(filepath.Dir(final))
}

// checkBlob refuses content of digest d and n bytes when want or size (if
// set) say otherwise.
func checkBlob(d digest.Digest, n int64, want digest.Digest, size int64) error {
	switch {
	case size >= 0 && n != size:
		return fmt.Errorf("blob %s: %w: got %d bytes, want %d", want, ErrCorrupt, n, size)
	case want != "" && d != want:
		return fmt.Errorf("blob %s: %w: content hashes to %s", want, ErrCorrupt, d)
	}
	return nil
}

// pinExisting reports whether the object final is present with size n, and if
// so adds hex to the call's lease first and looks again: an object found after
// it was pinned stays. One that is missing is pinned by place, as it is put
// there.
func (s *Store) pinExisting(ctx context.Context, kind leaseKind, hex, final string, n int64) (bool, error) {
	if st, err := os.Lstat(final); err != nil || st.Size() != n {
		return false, nil
	}
	if err := s.pin(ctx, kind, hex); err != nil {
		return false, err
	}
	st, err := os.Lstat(final)
	return err == nil && st.Size() == n, nil
}

// place renames the finished temporary file tmp to the object path final in a
// shared section, unless an object of size n is already there, after adding
// hex to the call's lease (kind 0: no lease entry). It reports whether tmp was
// renamed. Every object enters the store through place or placeAll, so GC,
// which deletes only under the exclusive lock, finds at a path the inode its
// scan saw or a newer one it must keep.
func (s *Store) place(ctx context.Context, kind leaseKind, hex, tmp, final string, n int64) (bool, error) {
	placed, err := s.placeAll(ctx, kind, hex, n, tmp, final)
	return len(placed) > 0, err
}

// placeAll is place for pairs of temporary file and object path, in one shared
// section; a pair with no temporary file is skipped. It returns the object
// paths it renamed to.
func (s *Store) placeAll(ctx context.Context, kind leaseKind, hex string, n int64, pairs ...string) ([]string, error) {
	release, err := s.shared(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if kind != 0 {
		if err := s.pinLocked(ctx, kind, hex); err != nil {
			return nil, err
		}
	}
	var placed []string
	for i := 0; i+1 < len(pairs); i += 2 {
		tmp, final := pairs[i], pairs[i+1]
		if tmp == "" {
			continue
		}
		if st, err := os.Lstat(final); err == nil && st.Size() == n {
			continue
		}
		if err := os.Rename(tmp, final); err != nil {
			return placed, err
		}
		placed = append(placed, final)
	}
	return placed, nil
}

// OpenBlob opens the blob d for reading. The reader re-hashes the bytes it returns and,
// instead of io.EOF, returns an error wrapping ErrCorrupt when they do not match d. A
// zero-length file for a non-empty digest fails at once with ErrCorrupt. A missing blob
// gives an error wrapping ErrNotFound.
func (s *Store) OpenBlob(d digest.Digest) (io.ReadCloser, error) {
	return s.OpenBlobSize(d, -1)
}

// OpenBlobSize is OpenBlob for a blob whose size is known (from a tree entry, say):
// a size mismatch fails at once with ErrCorrupt, before any byte is read. A negative
// size skips the check.
func (s *Store) OpenBlobSize(d digest.Digest, size int64) (*BlobReader, error) {
	hex, err := checkDigest(d)
	if err != nil {
		return nil, err
	}
	return openVerified(s.blobPath(hex), d, size)
}

func openVerified(p string, d digest.Digest, size int64) (*BlobReader, error) {
	f, err := openFile(p, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("blob %s: %w", d, ErrNotFound)
		}
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blob %s: %w", d, err)
	}
	if size >= 0 && st.Size() != size {
		f.Close()
		return nil, fmt.Errorf("blob %s: %w: size %d, want %d", d, ErrCorrupt, st.Size(), size)
	}
	if st.Size() == 0 && d != digest.SHA256.FromBytes(nil) {
		f.Close()
		return nil, fmt.Errorf("blob %s: %w: zero length", d, ErrCorrupt)
	}
	return &BlobReader{f: f, d: d, size: st.Size(), h: sha256.New()}, nil
}

// BlobReader reads a blob and checks its digest at the end.
type BlobReader struct {
	f    *os.File
	d    digest.Digest
	size int64
	n    int64
	h    hash.Hash
	err  error
}

// Size returns the size of the blob file when it was opened.
func (b *BlobReader) Size() int64 { return b.size }

// Read reads from the blob. At the end it returns io.EOF if the bytes matched the
// digest and an error wrapping ErrCorrupt otherwise.
func (b *BlobReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.f.Read(p)
	b.h.Write(p[:n])
	b.n += int64(n)
	if err == io.EOF {
		got := digest.NewDigest(digest.SHA256, b.h)
		switch {
		case b.n != b.size:
			b.err = fmt.Errorf("blob %s: %w: read %d bytes of %d", b.d, ErrCorrupt, b.n, b.size)
		case got != b.d:
			b.err = fmt.Errorf("blob %s: %w: content hashes to %s", b.d, ErrCorrupt, got)
		default:
			b.err = io.EOF
		}
		return n, b.err
	}
	if err != nil {
		b.err = fmt.Errorf("blob %s: %w", b.d, err)
		return n, b.err
	}
	return n, nil
}

// Close closes the blob file.
func (b *BlobReader) Close() error { return b.f.Close() }

// ReadBlob returns the verified content of the blob d.
func (s *Store) ReadBlob(ctx context.Context, d digest.Digest) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, err := s.OpenBlobSize(d, -1)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.dir, err)
	}
	defer r.Close()
	b := make([]byte, 0, r.Size())
	buf := bytes.NewBuffer(b)
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, fmt.Errorf("store %s: %w", s.dir, err)
	}
	return buf.Bytes(), nil
}

// hashFile returns the digest and size of the open file f, read with a large buffer.
func hashFile(ctx context.Context, f *os.File) (digest.Digest, int64, error) {
	h := sha256.New()
	bp := getBuf()
	defer putBuf(bp)
	buf := *bp
	var n int64
	for {
		m, err := f.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", 0, err
		}
		if err := ctx.Err(); err != nil {
			return "", 0, err
		}
	}
	return digest.NewDigest(digest.SHA256, h), n, nil
}

// CopyTo copies the blob to dst, which must be an empty file opened for
// writing, and fails with ErrCorrupt when the bytes do not match the digest.
// Where the filesystem shares extents (FICLONE: btrfs, XFS) the copy is a
// reflink, read back to check the digest; otherwise the bytes are copied and
// hashed on the way. Either way the blob is read once and dst owns its data:
// changing dst never changes the store. dst must be open for reading too.
func (b *BlobReader) CopyTo(dst *os.File) error {
	if b.n == 0 && unix.IoctlFileClone(int(dst.Fd()), int(b.f.Fd())) == nil {
		r := &BlobReader{f: dst, d: b.d, size: b.size, h: sha256.New()}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
		return nil
	}
	sw := &sparseWriter{f: dst}
	buf := getBuf()
	defer putBuf(buf)
	if _, err := io.CopyBuffer(sw, readerOnly{b}, *buf); err != nil {
		return err
	}
	return sw.finish()
}

// readerOnly hides other methods of a reader from io.Copy, so the bytes go
// through its Read (and its hash).
type readerOnly struct{ io.Reader }

// sparseWriter writes to f, skipping blocks of zeros so they stay holes (an
// ext4 image of a small tree is mostly holes).
type sparseWriter struct {
	f   *os.File
	off int64
}

const sparseBlock = 4096

func (w *sparseWriter) Write(p []byte) (int, error) {
	n := len(p)
	// One write per run of blocks that are not all zeros.
	for len(p) > 0 {
		data := 0
		for data < len(p) {
			k := min(len(p)-data, sparseBlock)
			if allZero(p[data : data+k]) {
				break
			}
			data += k
		}
		if data > 0 {
			if _, err := w.f.WriteAt(p[:data], w.off); err != nil {
				return n - len(p), err
			}
			w.off += int64(data)
			p = p[data:]
			continue
		}
		k := min(len(p), sparseBlock) // a block of zeros: a hole
		w.off += int64(k)
		p = p[k:]
	}
	return n, nil
}

// finish gives f its full size when it ends in a hole.
func (w *sparseWriter) finish() error { return w.f.Truncate(w.off) }

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
