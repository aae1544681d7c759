package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// inode identifies a file; hardlinks share one and are counted once.
type inode struct{ dev, ino uint64 }

// scan is one walk of the store, classifying every inode.
type scan struct {
	usage     map[inode]int64    // disk usage (st_blocks*512) of every inode
	fixed     map[inode]bool     // inodes outside any collectable object
	blobs     map[string]inode   // blob hex → inode
	files     map[string]inode   // file object name → inode
	actions   map[string]inode   // action file name → inode
	checkouts map[string][]inode // checkout hex → its inodes
	paths     map[string]string  // "blob/<name>" or "file/<name>" → path
}

func (s *Store) scan(ctx context.Context) (*scan, error) {
	sc := &scan{
		usage: map[inode]int64{}, fixed: map[inode]bool{}, blobs: map[string]inode{},
		files: map[string]inode{}, actions: map[string]inode{}, checkouts: map[string][]inode{},
		paths: map[string]string{},
	}
	err := filepath.WalkDir(s.dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed by a concurrent writer's rename or sweep
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		in := inode{uint64(st.Dev), st.Ino}
		sc.usage[in] = st.Blocks * 512
		rel, _ := filepath.Rel(s.dir, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		switch {
		case parts[0] == "blobs" && len(parts) == 4:
			sc.blobs[parts[3]] = in
			sc.paths["blob/"+parts[3]] = p
		case parts[0] == dirFiles && len(parts) == 3:
			sc.files[parts[2]] = in
			sc.paths["file/"+parts[2]] = p
		case parts[0] == dirActions && len(parts) == 2:
			sc.actions[parts[1]] = in
		case parts[0] == dirCheckouts && len(parts) >= 2:
			sc.checkouts[parts[1]] = append(sc.checkouts[parts[1]], in)
		default:
			sc.fixed[in] = true
		}
		return nil
	})
	return sc, err
}

func (sc *scan) total() int64 {
	var n int64
	for _, u := range sc.usage {
		n += u
	}
	return n
}

// Size returns the disk usage of the store in bytes, counting each inode once (blobs,
// file objects and checkouts share inodes through hardlinks).
func (s *Store) Size(ctx context.Context) (int64, error) {
	sc, err := s.scan(ctx)
	if err != nil {
		return 0, fmt.Errorf("store %s: size: %w", s.dir, err)
	}
	return sc.total(), nil
}

// GCStats reports what GC did.
type GCStats struct {
	BytesBefore, BytesAfter int64
	ActionsRemoved          int
	BlobsRemoved            int
	FilesRemoved            int
	CheckoutsRemoved        int
}

// refs is what one action keeps alive.
type refs struct {
	blobs     []string // hex
	files     []string // file object names
	checkouts []string // tree hex
}

// GC waits for the exclusive GC lock (so no build holding Hold is running), drops the
// least recently used action entries until the disk usage of the store is at most
// maxSize bytes, and then removes every blob, file object and checkout that no
// remaining entry refers to, the contents of quarantine/, unheld key lock files and
// stale temporary files. An entry whose tree cannot be read is dropped. Weak records
// are kept. A negative maxSize only removes unreferenced objects.
func (s *Store) GC(ctx context.Context, maxSize int64) (GCStats, error) {
	st, err := s.gc(ctx, maxSize)
	if err != nil {
		return st, fmt.Errorf("store %s: gc: %w", s.dir, err)
	}
	return st, nil
}

func (s *Store) gc(ctx context.Context, maxSize int64) (GCStats, error) {
	var stats GCStats
	release, err := s.lockExclusive(ctx)
	if err != nil {
		return stats, err
	}
	defer release()
	sc, err := s.scan(ctx)
	if err != nil {
		return stats, err
	}
	stats.BytesBefore = sc.total()
	ents, err := s.actionEntries()
	if err != nil {
		return stats, err
	}

	live := map[inode]bool{}
	var size int64
	for in := range sc.fixed {
		live[in] = true
		size += sc.usage[in]
	}
	keepBlobs, keepFiles, keepCheckouts := map[string]bool{}, map[string]bool{}, map[string]bool{}
	trees := map[digest.Digest]*tree.Tree{}
	var drop []actionEntry
	full := false
	for _, ae := range ents {
		if full {
			drop = append(drop, ae)
			continue
		}
		r, ok := s.actionRefs(ctx, ae.a, trees)
		if !ok {
			drop = append(drop, ae)
			continue
		}
		var ins []inode
		if in, ok := sc.actions[filepath.Base(ae.path)]; ok {
			ins = append(ins, in)
		}
		for _, h := range r.blobs {
			if in, ok := sc.blobs[h]; ok {
				ins = append(ins, in)
			}
		}
		for _, n := range r.files {
			if in, ok := sc.files[n]; ok {
				ins = append(ins, in)
			}
		}
		for _, h := range r.checkouts {
			ins = append(ins, sc.checkouts[h]...)
		}
		var add int64
		seen := map[inode]bool{}
		for _, in := range ins {
			if !live[in] && !seen[in] {
				seen[in] = true
				add += sc.usage[in]
			}
		}
		if maxSize >= 0 && size+add > maxSize {
			full = true
			drop = append(drop, ae)
			continue
		}
		size += add
		for in := range seen {
			live[in] = true
		}
		for _, h := range r.blobs {
			keepBlobs[h] = true
		}
		for _, n := range r.files {
			keepFiles[n] = true
		}
		for _, h := range r.checkouts {
			keepCheckouts[h] = true
		}
	}

	// Entries go first, so that no entry ever points at a removed object.
	for _, ae := range drop {
		if err := os.Remove(ae.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return stats, err
		}
		stats.ActionsRemoved++
	}
	for h := range sc.checkouts {
		if !keepCheckouts[h] {
			if err := forceRemoveAll(filepath.Join(s.dir, dirCheckouts, h)); err != nil {
				return stats, err
			}
			stats.CheckoutsRemoved++
		}
	}
	for h := range sc.blobs {
		if !keepBlobs[h] {
			if err := removeIfExists(sc.paths["blob/"+h]); err != nil {
				return stats, err
			}
			stats.BlobsRemoved++
		}
	}
	for n := range sc.files {
		if !keepFiles[n] {
			if err := removeIfExists(sc.paths["file/"+n]); err != nil {
				return stats, err
			}
			stats.FilesRemoved++
		}
	}
	if err := emptyDir(filepath.Join(s.dir, dirQuarantine)); err != nil {
		return stats, err
	}
	if err := s.sweepKeyLocks(); err != nil {
		return stats, err
	}
	if _, err := s.sweepTmp(); err != nil {
		return stats, err
	}
	after, err := s.scan(ctx)
	if err != nil {
		return stats, err
	}
	stats.BytesAfter = after.total()
	return stats, nil
}

// actionRefs lists what a keeps alive; ok is false when its tree cannot be read.
func (s *Store) actionRefs(ctx context.Context, a *Action, trees map[digest.Digest]*tree.Tree) (refs, bool) {
	var r refs
	for _, d := range a.blobs() {
		if _, err := checkDigest(d); err != nil {
			return r, false
		}
		r.blobs = append(r.blobs, d.Encoded())
	}
	if a.Tree == "" {
		return r, true
	}
	t, ok := trees[a.Tree]
	if !ok {
		var err error
		if t, err = s.GetTree(ctx, a.Tree); err != nil {
			return r, false
		}
		trees[a.Tree] = t
	}
	r.checkouts = append(r.checkouts, a.Tree.Encoded())
	for _, e := range t.Entries {
		if e.Type == tree.File {
			h := e.Digest.Encoded()
			r.blobs = append(r.blobs, h)
			r.files = append(r.files, fileObjName(h, e.Mode, e.UID, e.GID))
		}
	}
	return r, true
}

// sweepKeyLocks removes key lock files nobody holds; lockPath notices the removal.
func (s *Store) sweepKeyLocks() error {
	dir := filepath.Join(s.dir, dirKeyLocks)
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range des {
		p := filepath.Join(dir, de.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil && sameFile(f, p) {
			os.Remove(p)
		}
		f.Close()
	}
	return nil
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// emptyDir removes everything inside dir.
func emptyDir(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range des {
		if err := forceRemoveAll(filepath.Join(dir, de.Name())); err != nil {
			return err
		}
	}
	return nil
}
