package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// fileObjName returns the name of a file object inside its shard directory.
func fileObjName(hex string, mode uint32, uid, gid int) string {
	return hex + "." + strconv.FormatUint(uint64(mode&0o7777), 8) + "." + strconv.Itoa(uid) + "." + strconv.Itoa(gid)
}

func (s *Store) fileObjPath(hex string, mode uint32, uid, gid int) string {
	return filepath.Join(s.dir, dirFiles, hex[:2], fileObjName(hex, mode, uid, gid))
}

// parseFileObjName splits a file object name into its parts.
func parseFileObjName(name string) (hex string, mode uint32, uid, gid int, ok bool) {
	parts := strings.Split(name, ".")
	if len(parts) != 4 || len(parts[0]) != 64 {
		return "", 0, 0, 0, false
	}
	m, err1 := strconv.ParseUint(parts[1], 8, 32)
	u, err2 := strconv.Atoi(parts[2])
	g, err3 := strconv.Atoi(parts[3])
	if err1 != nil || err2 != nil || err3 != nil || m&^0o7777 != 0 {
		return "", 0, 0, 0, false
	}
	return parts[0], uint32(m), u, g, true
}

// FilePath returns the path of the file object holding content d with the given mode
// and owners, for read-only use. It does not check that the object exists.
func (s *Store) FilePath(d digest.Digest, mode uint32, uid, gid int) (string, error) {
	hex, err := checkDigest(d)
	if err != nil {
		return "", err
	}
	return s.fileObjPath(hex, mode, uid, gid), nil
}

// LinkFile adds the regular file at path to the store as a file object with the given
// permission bits (07777) and, when the process runs as root, owners; it returns the
// digest and size of its content. The file must not change while LinkFile runs and is
// consumed by it: when the object is new, the file itself is chmod-ed (and chown-ed)
// and hardlinked into the store, so it must never be written again. The file is copied
// instead when it is on another filesystem or already has other hardlinks. The blob of
// the same content is made a hardlink of the object when it is missing.
func (s *Store) LinkFile(ctx context.Context, path string, mode uint32, uid, gid int) (digest.Digest, int64, error) {
	d, n, err := s.linkFile(ctx, path, mode, uid, gid)
	if err != nil {
		return "", 0, fmt.Errorf("store %s: link %s: %w", s.dir, path, err)
	}
	return d, n, nil
}

func (s *Store) linkFile(ctx context.Context, path string, mode uint32, uid, gid int) (digest.Digest, int64, error) {
	d, n, found, pending, err := s.linkUnlessFound(ctx, path, mode, uid, gid)
	if err == nil {
		err = syncTogether(dirSyncs(pending...)...)
	}
	if err != nil || !found {
		return d, n, err
	}
	missing, err := s.keepFound(ctx, []foundFile{{d, n, mode, uid, gid}})
	if err != nil {
		return "", 0, err
	}
	if len(missing) > 0 {
		// Removed before it was pinned: this file will be the object.
		return s.linkFile(ctx, path, mode, uid, gid)
	}
	return d, n, nil
}

// foundFile is an object linkUnlessFound found in the store, not yet pinned.
type foundFile struct {
	d        digest.Digest
	n        int64
	mode     uint32
	uid, gid int
}

// keepFound pins the objects found to the call's lease in one shared section
// and looks for them again: an object found after it was pinned stays. It
// returns the indexes of those gone meanwhile, to be linked after all.
func (s *Store) keepFound(ctx context.Context, files []foundFile) (missing []int, err error) {
	hexes := make([]string, len(files))
	for i, f := range files {
		hexes[i] = f.d.Encoded()
	}
	if err := s.pin(ctx, kindBlob, hexes...); err != nil {
		return nil, err
	}
	for i, f := range files {
		obj := s.fileObjPath(hexes[i], f.mode, f.uid, f.gid)
		if st, err := os.Lstat(obj); err != nil || st.Size() != f.n {
			missing = append(missing, i)
			continue
		}
		if err := s.ensureBlobLink(ctx, hexes[i], obj, f.n); err != nil {
			return nil, err
		}
	}
	return missing, nil
}

// linkUnlessFound hashes the file at path and, unless the store has its
// object already (found: for the caller to pin with keepFound), makes it the
// object (see LinkFile). The object's content is synced before it has a name;
// the directories its names (and new shards) went into are returned in
// pending, for the caller to sync, all of a tree's at once, before anything
// refers to the object.
func (s *Store) linkUnlessFound(ctx context.Context, path string, mode uint32, uid, gid int) (d digest.Digest, n int64, found bool, pending []string, err error) {
	mode &= 0o7777
	f, err := openFile(path, unix.O_NOFOLLOW)
	if err != nil {
		return "", 0, false, nil, err
	}
	defer f.Close()
	var st0 unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st0); err != nil {
		return "", 0, false, nil, err
	}
	if st0.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", 0, false, nil, fmt.Errorf("%w: not a regular file", ErrUnsupported)
	}
	synced := syncBehind(f, st0.Size)
	if d, n, err = hashFile(ctx, f); err != nil {
		return "", 0, false, nil, err
	}
	var st1 unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st1); err != nil {
		return "", 0, false, nil, err
	}
	if st1.Size != n || st1.Mtim != st0.Mtim || st1.Size != st0.Size {
		return "", 0, false, nil, errors.New("file changed while it was hashed")
	}
	hex := d.Encoded()
	obj := s.fileObjPath(hex, mode, uid, gid)
	if st, err := os.Lstat(obj); err == nil && st.Size() == n {
		return d, n, true, nil, nil
	}
	blob := s.blobPath(hex)
	var newShards []string
	for _, p := range []string{obj, blob} {
		parent, err := makeShard(filepath.Dir(p))
		if err != nil {
			return "", 0, false, nil, err
		}
		if parent != "" {
			newShards = append(newShards, parent)
		}
	}
	tmp := ""
	if st1.Nlink == 1 {
		if err := synced(); err != nil {
			return "", 0, false, nil, err
		}
		tmp, err = s.linkToTemp(f, path, mode, uid, gid, &st1)
		if err != nil {
			return "", 0, false, nil, err
		}
	}
	if tmp == "" {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", 0, false, nil, err
		}
		if tmp, err = s.copyToTemp(ctx, f, d, n, mode, uid, gid); err != nil {
			return "", 0, false, nil, err
		}
	}
	// The blob path is a second name of the same inode, placed with it.
	tmpBlob := ""
	if st, err := os.Lstat(blob); err != nil || st.Size() != n {
		tmpBlob, err = s.tempName("l-")
		if err == nil {
			err = os.Link(tmp, tmpBlob)
		}
		if err != nil {
			os.Remove(tmp)
			return "", 0, false, nil, err
		}
	}
	placed, err := s.placeAll(ctx, kindBlob, hex, n, tmp, obj, tmpBlob, blob)
	if !slices.Contains(placed, obj) {
		os.Remove(tmp)
	}
	if tmpBlob != "" && !slices.Contains(placed, blob) {
		os.Remove(tmpBlob)
	}
	if err != nil {
		return "", 0, false, nil, err
	}
	for _, p := range placed {
		newShards = append(newShards, filepath.Dir(p))
	}
	return d, n, false, newShards, nil
}

// linkToTemp gives the file, whose content the caller synced, its metadata and
// links it into the session, ready to be placed. It returns "" when the file is
// on another filesystem and must be copied.
func (s *Store) linkToTemp(f *os.File, path string, mode uint32, uid, gid int, st *unix.Stat_t) (string, error) {
	fd := int(f.Fd())
	// chown clears setuid and setgid bits, so it goes first.
	if s.root && (int(st.Uid) != uid || int(st.Gid) != gid) {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return "", err
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return "", err
	}
	tmp, err := s.tempName("l-")
	if err != nil {
		return "", err
	}
	if err := os.Link(path, tmp); err != nil {
		if errors.Is(err, unix.EXDEV) {
			return "", nil
		}
		return "", err
	}
	return tmp, nil
}

// copyToTemp copies r, which must hash to d, into a new synced temporary file
// with the given metadata and returns its path.
func (s *Store) copyToTemp(ctx context.Context, r io.Reader, d digest.Digest, n int64, mode uint32, uid, gid int) (string, error) {
	t, err := s.tempFile("c-*")
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
	bp := getBuf()
	defer putBuf(bp)
	verifier := d.Verifier()
	w := io.MultiWriter(t, verifier)
	copied, err := io.CopyBuffer(w, struct{ io.Reader }{r}, *bp)
	if err != nil {
		return "", err
	}
	if copied != n || !verifier.Verified() {
		return "", fmt.Errorf("copy of %s: %w: content changed", d, ErrCorrupt)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	fd := int(t.Fd())
	if s.root {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return "", err
		}
	}
	if err := unix.Fchmod(fd, mode&0o7777); err != nil {
		return "", err
	}
	if err := t.Sync(); err != nil {
		return "", err
	}
	ok = true
	return tmp, nil
}

// ensureBlobLink makes the blob path of hex a hardlink of obj unless a blob of the
// right size is already there.
func (s *Store) ensureBlobLink(ctx context.Context, hex, obj string, n int64) error {
	blob := s.blobPath(hex)
	if st, err := os.Lstat(blob); err == nil && st.Size() == n {
		return nil
	}
	if err := ensureShard(filepath.Dir(blob)); err != nil {
		return err
	}
	tmp, err := s.tempName("l-")
	if err != nil {
		return err
	}
	if err := os.Link(obj, tmp); err != nil {
		return err
	}
	placed, err := s.place(ctx, 0, hex, tmp, blob, n)
	if !placed {
		os.Remove(tmp)
	}
	if err != nil || !placed {
		return err
	}
	return syncDir(filepath.Dir(blob))
}

// ensureFileObject makes sure the file object for content d (of size n) with the given
// metadata exists, creating it from the blob (or from another file object of the same
// content) with a verified copy. It returns the object's path.
func (s *Store) ensureFileObject(ctx context.Context, d digest.Digest, n int64, mode uint32, uid, gid int) (string, error) {
	hex, err := checkDigest(d)
	if err != nil {
		return "", err
	}
	obj := s.fileObjPath(hex, mode, uid, gid)
	if st, err := os.Lstat(obj); err == nil && st.Size() == n {
		return obj, nil
	}
	src := s.blobPath(hex)
	if _, err := os.Lstat(src); err != nil {
		// Fall back to any file object of the same content.
		m, _ := filepath.Glob(filepath.Join(s.dir, dirFiles, hex[:2], hex+".*"))
		if len(m) == 0 {
			return "", fmt.Errorf("file %s: %w", d, ErrNotFound)
		}
		src = m[0]
	}
	r, err := openVerified(src, d, n)
	if err != nil {
		return "", err
	}
	defer r.Close()
	if err := ensureShard(filepath.Dir(obj)); err != nil {
		return "", err
	}
	tmp, err := s.copyToTemp(ctx, r, d, n, mode, uid, gid)
	if err != nil {
		return "", err
	}
	// Not leased on its own: the caller's tree is.
	placed, err := s.place(ctx, 0, hex, tmp, obj, n)
	if !placed {
		os.Remove(tmp)
	}
	if err != nil {
		return "", err
	}
	if placed {
		if err := syncDir(filepath.Dir(obj)); err != nil {
			return "", err
		}
	}
	return obj, s.ensureBlobLink(ctx, hex, obj, n)
}

// syncBehind starts syncing a large file's content while the caller hashes
// it, so the wait for the disk overlaps the hashing instead of following it
// (sync_file_range alone only started the writeback: 64 MiB took hash, then
// the rest of the flush). It returns the sync to call before the content is
// named. A small file is synced by that call only: it hashes at once and is
// often content the store already has, which is then never synced, so
// starting its writeback would only cost I/O. The early sync runs on a
// descriptor of its own; a caller that finds the content in the store
// already need not wait for it. Failure to start it only loses the overlap.
func syncBehind(f *os.File, size int64) func() error {
	if size < 1<<20 {
		return f.Sync
	}
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return f.Sync
	}
	done := make(chan error, 1)
	go func() {
		done <- unix.Fsync(fd)
		unix.Close(fd)
	}()
	return func() error { return <-done }
}
