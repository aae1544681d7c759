package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// layout is a repository kept as an OCI image layout directory: blobs under
// blobs/sha256, tags as org.opencontainers.image.ref.name annotations in
// index.json. It is safe across processes, which oras-go's content/oci store
// is not (oras-go #286, oras #1888): every change to index.json takes an
// exclusive flock on .lock, re-reads the index, and replaces it with a synced
// temporary file renamed into place, so readers (who take no lock) see the
// old index or the new one, never a torn one. Blobs are written to ingest/,
// verified, synced and renamed into place, read-only.
type layout struct {
	dir  string
	repo string
	// hook, when set, is called at named steps (tests kill the process there).
	hook func(step string)
}

var _ target = (*layout)(nil)

const layoutIngest = "ingest"

// openLayout opens (creating) the layout of repository repo in dir.
func openLayout(dir, repo string) (*layout, error) {
	l := &layout{dir: dir, repo: repo}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("oci layout %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, layoutIngest), 0o700); err != nil {
		return nil, fmt.Errorf("oci layout %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, ocispec.ImageLayoutFile)); errors.Is(err, fs.ErrNotExist) {
		b, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
		if err := writeFileAtomic(dir, ocispec.ImageLayoutFile, b); err != nil {
			return nil, fmt.Errorf("oci layout %s: %w", dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ocispec.ImageIndexFile)); errors.Is(err, fs.ErrNotExist) {
		if err := l.update(func(*ocispec.Index) error { return nil }); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *layout) name() string { return l.repo }

func (l *layout) blobPath(desc ocispec.Descriptor) (string, error) {
	if err := desc.Digest.Validate(); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return filepath.Join(l.dir, "blobs", desc.Digest.Algorithm().String(), desc.Digest.Encoded()), nil
}

func (l *layout) exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	p, err := l.blobPath(desc)
	if err != nil {
		return false, err
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Size() != desc.Size {
		return false, nil
	}
	if desc.Size < smallBlob {
		f, err := os.Open(p)
		if err != nil {
			return false, nil
		}
		defer f.Close()
		_, err = readAllDiscard(newVerifier(f, desc))
		return err == nil, nil
	}
	return true, nil
}

func (l *layout) fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	p, err := l.blobPath(desc)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %s: %w", l.repo, desc.Digest, ErrNotFound)
	}
	return f, err
}

// smallBlob is the size under which blobs are not synced one by one: tag
// syncs the whole filesystem once before a tag can reach them, and exists
// re-hashes them (cheap at this size), so one torn by a power cut before that
// is fetched again rather than trusted.
const smallBlob = 1 << 20

// push writes r into ingest/, checks it against desc and renames it into
// place: a reader never sees a partial or wrong blob. A large blob is synced
// before the rename, its writeback started as it is written so the sync
// overlaps the transfer.
func (l *layout) push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	p, err := l.blobPath(desc)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(l.dir, layoutIngest), "blob-*")
	if err != nil {
		return fmt.Errorf("oci layout %s: %w", l.dir, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	large := desc.Size >= smallBlob
	err = copySparse(f, newVerifier(ctxReader{ctx, r}, desc), large, nil)
	if err == nil {
		err = f.Chmod(0o444)
	}
	if err == nil && large {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if l.hook != nil {
		l.hook("blob-written")
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("oci layout %s: %w", l.dir, err)
	}
	return nil
}

// flush makes every blob written so far durable (their contents and names):
// one syncfs, instead of a sync per small blob.
func (l *layout) flush() error {
	d, err := os.Open(filepath.Join(l.dir, "blobs", "sha256"))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("oci layout %s: sync: %w", l.dir, err)
	}
	return d.Sync()
}

// tag records tag → desc in index.json; the content must already be a blob.
func (l *layout) tag(ctx context.Context, desc ocispec.Descriptor, b []byte, tag string) error {
	if ok, err := l.exists(ctx, desc); err != nil || !ok {
		if err := l.push(ctx, desc, bytes.NewReader(b)); err != nil {
			return err
		}
	}
	if err := l.flush(); err != nil {
		return err
	}
	return l.update(func(idx *ocispec.Index) error {
		d := ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size, ArtifactType: desc.ArtifactType,
			Annotations: map[string]string{ocispec.AnnotationRefName: tag}}
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(m ocispec.Descriptor) bool { return m.Annotations[ocispec.AnnotationRefName] == tag })
		idx.Manifests = append(idx.Manifests, d)
		slices.SortFunc(idx.Manifests, func(a, b ocispec.Descriptor) int {
			return strings.Compare(a.Annotations[ocispec.AnnotationRefName], b.Annotations[ocispec.AnnotationRefName])
		})
		return nil
	})
}

func (l *layout) index() (*ocispec.Index, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, ocispec.ImageIndexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("oci layout %s: %w", l.dir, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("oci layout %s: index.json: %w: %v", l.dir, ErrInvalid, err)
	}
	return &idx, nil
}

func (l *layout) resolve(ctx context.Context, tag string) (ocispec.Descriptor, error) {
	if d, err := digest.Parse(tag); err == nil {
		return l.resolveDigest(d)
	}
	idx, err := l.index()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for _, m := range idx.Manifests {
		if m.Annotations[ocispec.AnnotationRefName] == tag {
			m.Annotations = nil
			return m, nil
		}
	}
	return ocispec.Descriptor{}, fmt.Errorf("%s:%s: %w", l.repo, tag, ErrNotFound)
}

// resolveDigest describes the manifest or index stored as blob d, reading its
// mediaType (a layout keeps no media types beside its blobs).
func (l *layout) resolveDigest(d digest.Digest) (ocispec.Descriptor, error) {
	p, err := l.blobPath(ocispec.Descriptor{Digest: d})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s@%s: %w", l.repo, d, ErrNotFound)
	}
	if fi.Size() > maxManifestBytes {
		return ocispec.Descriptor{}, fmt.Errorf("%s@%s: %w: not a manifest (%d bytes)", l.repo, d, ErrInvalid, fi.Size())
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	var probe struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(b, &probe) != nil || !isManifest(probe.MediaType) {
		return ocispec.Descriptor{}, fmt.Errorf("%s@%s: %w: not a manifest or index", l.repo, d, ErrInvalid)
	}
	return ocispec.Descriptor{MediaType: probe.MediaType, Digest: d, Size: fi.Size()}, nil
}

func (l *layout) tags(ctx context.Context) ([]string, error) {
	idx, err := l.index()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range idx.Manifests {
		if t := m.Annotations[ocispec.AnnotationRefName]; t != "" {
			out = append(out, t)
		}
	}
	return out, nil
}

// update changes index.json under the layout's lock: read, change, write a
// temporary file, sync, rename, sync the directory.
func (l *layout) update(change func(*ocispec.Index) error) error {
	unlock, err := lockFile(filepath.Join(l.dir, ".lock"))
	if err != nil {
		return fmt.Errorf("oci layout %s: lock: %w", l.dir, err)
	}
	defer unlock()
	if l.hook != nil {
		l.hook("index-locked")
	}
	idx, err := l.index()
	if err != nil {
		return err
	}
	if err := change(idx); err != nil {
		return err
	}
	idx.SchemaVersion, idx.MediaType = 2, ocispec.MediaTypeImageIndex
	if idx.Manifests == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(l.dir, ocispec.ImageIndexFile, b); err != nil {
		return fmt.Errorf("oci layout %s: %w", l.dir, err)
	}
	return nil
}

// lockPublish holds off other processes publishing into this repository
// while a version's index is read, merged with an image's entries and
// tagged. A lock of its own: tag takes the index lock inside it.
func (l *layout) lockPublish() (func(), error) {
	unlock, err := lockFile(filepath.Join(l.dir, ".publish.lock"))
	if err != nil {
		return nil, fmt.Errorf("oci layout %s: lock: %w", l.dir, err)
	}
	return unlock, nil
}

// lockFile takes an exclusive flock on p, created if missing. The kernel
// releases it when the holder dies, so a killed process leaves no stale lock.
func lockFile(p string) (func(), error) {
	// O_NOFOLLOW: a link planted in its place must not open (or create)
	// something else as whoever runs strata.
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// writeFileAtomic writes name in dir through a synced temporary file renamed
// into place, then syncs dir.
func writeFileAtomic(dir, name string, b []byte) error {
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+name+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readerOnly hides a reader's other methods (WriterTo), so io.Copy reads it
// through Read and its checks.
type readerOnly struct{ io.Reader }

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// copySparse copies r into the new file f, leaving blocks of zeros as holes
// (ext4 and raw disk images are mostly holes; writing their zeros would cost
// their full size on disk), and returns r's error. With writeback, it starts
// writing each 8 MiB to disk as it goes, so a final sync has little left to
// wait for. step, when set, is called after each chunk.
func copySparse(f *os.File, r io.Reader, writeback bool, step func()) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var off, flushed int64
	for {
		if writeback && off-flushed >= 8<<20 {
			_ = unix.SyncFileRange(int(f.Fd()), flushed, off-flushed, unix.SYNC_FILE_RANGE_WRITE)
			flushed = off
		}
		n, rerr := fill(r, buf)
		// One write per run of blocks that are not all zeros (a write per
		// block cost a 256 MiB pull 4096 system calls).
		run := 0 // start of the current run of data in buf
		for i := 0; i < n; i += sparseBlock {
			b := buf[i:min(i+sparseBlock, n)]
			if bytes.Equal(b, zeroBlock[:len(b)]) {
				if i > run {
					if _, err := f.WriteAt(buf[run:i], off+int64(run)); err != nil {
						return err
					}
				}
				run = i + len(b)
			}
		}
		if n > run {
			if _, err := f.WriteAt(buf[run:n], off+int64(run)); err != nil {
				return err
			}
		}
		off += int64(n)
		if n > 0 && step != nil {
			step()
		}
		if rerr == io.EOF {
			return f.Truncate(off)
		}
		if rerr != nil {
			return rerr
		}
	}
}

// fill reads into buf until it is full or r fails. Unlike io.ReadFull it
// keeps r's own error: only io.EOF ends the copy, and a body cut short (which
// Go's HTTP client reports as io.ErrUnexpectedEOF) stays an error, never a
// complete blob.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

const sparseBlock = 64 << 10

// bufPool holds copy buffers: a pull of many small blobs must not allocate
// (and zero) a megabyte for each.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

var zeroBlock = make([]byte, sparseBlock)
