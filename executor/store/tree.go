package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// PutTree stores the canonical encoding of t as a blob and returns its digest, which is
// t.Digest(). The tree must be valid (see tree.Tree.Validate).
func (s *Store) PutTree(ctx context.Context, t *tree.Tree) (digest.Digest, error) {
	desc, err := s.PutTreeDesc(ctx, t)
	return desc.Digest, err
}

// GetTree reads, verifies and decodes the tree manifest d.
func (s *Store) GetTree(ctx context.Context, d digest.Digest) (*tree.Tree, error) {
	hex, err := checkDigest(d)
	if err != nil {
		return nil, fmt.Errorf("store %s: get tree: %w", s.dir, err)
	}
	if err := s.pin(ctx, kindTree, hex); err != nil {
		return nil, err
	}
	return s.getTree(ctx, d)
}

// getTree is GetTree without the lease.
func (s *Store) getTree(ctx context.Context, d digest.Digest) (*tree.Tree, error) {
	if t, ok := s.cachedTree(d); ok && s.HasBlob(d) {
		return t, nil
	}
	b, err := s.ReadBlob(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("get tree: %w", err)
	}
	t, err := tree.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("store %s: get tree %s: %w", s.dir, d, err)
	}
	s.cacheTree(d, t)
	return t, nil
}

// fileJob is a regular file waiting to be linked into the store.
type fileJob struct {
	idx  int // index into the entries being built
	path string
}

// linkFiles runs LinkFile for every job in parallel and fills in the digest and
// size of each job's entry. It runs more jobs at once than there are CPUs: a new
// small file's time is its content's fsync, a wait on the disk that overlapping
// fsyncs share (200 new files: 121 ms two at a time, 72 ms sixteen). The files whose objects the store
// already holds, most of a rebuilt stage's, are pinned to the lease together, in
// one shared section and one write, instead of one each. The directories the
// new objects went into are returned unsynced, each once, for the caller to
// sync with the tree's manifest (putTree): one round of fsyncs for the whole
// tree instead of one after every file.
func (s *Store) linkFiles(ctx context.Context, entries []tree.Entry, jobs []fileJob) (pending []string, err error) {
	found := make([]bool, len(jobs))
	dirs := make([][]string, len(jobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(runtime.GOMAXPROCS(0), 16))
	for i, j := range jobs {
		g.Go(func() error {
			e := &entries[j.idx]
			d, n, ok, pending, err := s.linkUnlessFound(gctx, j.path, e.Mode, e.UID, e.GID)
			if err != nil {
				return fmt.Errorf("store %s: link %s: %w", s.dir, j.path, err)
			}
			e.Digest, e.Size, found[i], dirs[i] = d, n, ok, pending
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, ds := range dirs {
		for _, d := range ds {
			if !seen[d] {
				seen[d] = true
				pending = append(pending, d)
			}
		}
	}
	var files []foundFile
	var of []fileJob // the job of each of files
	for i, j := range jobs {
		if e := entries[j.idx]; found[i] {
			files = append(files, foundFile{e.Digest, e.Size, e.Mode & 0o7777, e.UID, e.GID})
			of = append(of, j)
		}
	}
	missing, err := s.keepFound(ctx, files)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.dir, err)
	}
	for _, i := range missing {
		e := &entries[of[i].idx]
		d, n, err := s.LinkFile(ctx, of[i].path, e.Mode, e.UID, e.GID)
		if err != nil {
			return nil, err
		}
		e.Digest, e.Size = d, n
	}
	return pending, nil
}

// readable lets a store without root read a directory its owner cannot: a
// stage may leave one without search permission (strata.copy's mode: 0o600
// applies to directories too), which root reads through and a build without
// root failed on, naming an lstat. The entry keeps the mode lstat saw; the
// directory committed from is scratch.
func (s *Store) readable(p string, st *unix.Stat_t) {
	if !s.root && st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Mode&0o700 != 0o700 {
		_ = unix.Chmod(p, st.Mode&0o7777|0o700)
	}
}

// statEntry builds the entry for path (named rel in the tree) from lstat, without the
// digest of a file. Types a tree cannot hold give an error wrapping ErrUnsupported.
func statEntry(path, rel string, st *unix.Stat_t) (tree.Entry, error) {
	e := tree.Entry{Path: rel, Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid)}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Type = tree.File
	case unix.S_IFDIR:
		e.Type = tree.Dir
	case unix.S_IFLNK:
		e.Type = tree.Symlink
		e.Mode = 0o777
		target, err := os.Readlink(path)
		if err != nil {
			return e, err
		}
		e.Target = target
	case unix.S_IFCHR, unix.S_IFBLK:
		// Only a root build (real mknod) gets here; a rootless one records its
		// devices (see executor/builtin.Records).
		e.Type = tree.CharDev
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			e.Type = tree.BlockDev
		}
		e.Major, e.Minor = unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))
	case unix.S_IFIFO:
		e.Type = tree.Fifo
	default:
		return e, fmt.Errorf("%w: %s: type %#o is not a file, directory, symlink, device or fifo", ErrUnsupported, path, st.Mode&unix.S_IFMT)
	}
	return e, nil
}

// CommitDir records the plain directory dir as a tree: every regular file is added with
// LinkFile (so the files are consumed, see LinkFile), directories and symlinks are
// recorded with the mode, uid and gid lstat reports. Sockets, devices and fifos are an
// error naming the path. The tree is stored with PutTree and returned with its digest.
func (s *Store) CommitDir(ctx context.Context, dir string) (*tree.Tree, digest.Digest, error) {
	var entries []tree.Entry
	var jobs []fileJob
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		e, err := statEntry(p, filepath.ToSlash(rel), &st)
		if err != nil {
			return err
		}
		s.readable(p, &st)
		if e.Type == tree.File {
			jobs = append(jobs, fileJob{idx: len(entries), path: p})
		}
		entries = append(entries, e)
		return nil
	})
	var pending []string
	if err == nil {
		pending, err = s.linkFiles(ctx, entries, jobs)
	}
	if err != nil {
		return nil, "", fmt.Errorf("store %s: commit %s: %w", s.dir, dir, err)
	}
	t := &tree.Tree{Entries: entries}
	t.Sort()
	desc, err := s.putTree(ctx, t, pending)
	if err != nil {
		return nil, "", fmt.Errorf("commit %s: %w", dir, err)
	}
	d := desc.Digest
	s.markComplete(ctx, d) // every file was just linked
	return t, d, nil
}

// overlay xattrs, in the trusted.* (privileged mount) and user.* (userxattr) spaces.
const (
	xOpaque   = "overlay.opaque"
	xWhiteout = "overlay.whiteout"
)

// overlayXattrs returns the overlay.* xattrs of path (without the trusted./user.
// prefix) and their values.
func overlayXattrs(path string) (map[string][]byte, error) {
	buf := make([]byte, 1024)
	n, err := unix.Llistxattr(path, buf)
	if errors.Is(err, unix.ERANGE) {
		sz, err2 := unix.Llistxattr(path, nil)
		if err2 != nil {
			return nil, err2
		}
		buf = make([]byte, sz)
		n, err = unix.Llistxattr(path, buf)
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, &fs.PathError{Op: "listxattr", Path: path, Err: err}
	}
	var out map[string][]byte
	for _, name := range bytes.Split(buf[:n], []byte{0}) {
		nm := string(name)
		var short string
		switch {
		case strings.HasPrefix(nm, "trusted.overlay."):
			short = strings.TrimPrefix(nm, "trusted.")
		case strings.HasPrefix(nm, "user.overlay."):
			short = strings.TrimPrefix(nm, "user.")
		default:
			continue
		}
		val := make([]byte, 256)
		m, err := unix.Lgetxattr(path, nm, val)
		if err != nil {
			return nil, &fs.PathError{Op: "getxattr " + nm, Path: path, Err: err}
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[short] = val[:m]
	}
	return out, nil
}

// CommitUpper applies the overlayfs upper directory upperDir to the tree base and
// stores the result, returning it with its digest. Only the upper directory is read and
// hashed, so the cost follows the size of the change, not of the tree:
//
//   - a whiteout (a 0:0 character device, or a zero-size file with the
//     trusted.overlay.whiteout or user.overlay.whiteout xattr) deletes the path and
//     everything under it;
//   - a directory with the overlay.opaque xattr set to "y" replaces the base directory
//     and its contents;
//   - any other entry adds or replaces the path; a directory that is also a directory in
//     base merges with it, and a file or symlink replacing a directory removes its
//     contents.
//
// Regular files are added with LinkFile, so the upper directory is consumed. Upper
// directories written with the redirect_dir or metacopy features are refused with an
// error wrapping ErrUnsupported. A nil base is the empty tree. base must be a tree of
// a recorded action or of an earlier commit, whose file blobs are all present: the
// result is treated as complete, so PutAction does not stat each of its files.
func (s *Store) CommitUpper(ctx context.Context, base *tree.Tree, upperDir string) (*tree.Tree, digest.Digest, error) {
	t, pending, err := s.commitUpper(ctx, base, upperDir)
	if err != nil {
		return nil, "", fmt.Errorf("store %s: commit upper %s: %w", s.dir, upperDir, err)
	}
	desc, err := s.putTree(ctx, t, pending)
	if err != nil {
		return nil, "", fmt.Errorf("commit upper %s: %w", upperDir, err)
	}
	d := desc.Digest
	// Upper files were just linked; the rest belong to base, which the caller took
	// from a recorded action or an earlier commit (see the contract above).
	s.markComplete(ctx, d)
	return t, d, nil
}

func (s *Store) commitUpper(ctx context.Context, base *tree.Tree, upperDir string) (*tree.Tree, []string, error) {
	var baseEntries []tree.Entry
	if base != nil {
		baseEntries = base.Entries
	}
	// removed marks base entries that are deleted or replaced; added holds upper entries.
	removed := make([]bool, len(baseEntries))
	var added []tree.Entry
	var jobs []fileJob
	removeBase := func(p string, subtree, self bool) {
		if self {
			i := sort.Search(len(baseEntries), func(i int) bool { return baseEntries[i].Path >= p })
			if i < len(baseEntries) && baseEntries[i].Path == p {
				removed[i] = true
			}
		}
		if subtree {
			prefix := p + "/"
			i := sort.Search(len(baseEntries), func(i int) bool { return baseEntries[i].Path >= prefix })
			for ; i < len(baseEntries) && strings.HasPrefix(baseEntries[i].Path, prefix); i++ {
				removed[i] = true
			}
		}
	}
	err := filepath.WalkDir(upperDir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == upperDir {
			return nil
		}
		rel, err := filepath.Rel(upperDir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		typ := st.Mode & unix.S_IFMT
		if typ == unix.S_IFCHR && st.Rdev == 0 {
			removeBase(rel, true, true) // whiteout
			return nil
		}
		var xa map[string][]byte
		if typ == unix.S_IFREG || typ == unix.S_IFDIR {
			if xa, err = overlayXattrs(p); err != nil {
				return err
			}
		}
		if _, ok := xa["overlay.redirect"]; ok {
			return fmt.Errorf("%w: %s: overlay redirect_dir", ErrUnsupported, p)
		}
		if _, ok := xa["overlay.metacopy"]; ok {
			return fmt.Errorf("%w: %s: overlay metacopy", ErrUnsupported, p)
		}
		if _, ok := xa[xWhiteout]; ok && typ == unix.S_IFREG && st.Size == 0 {
			removeBase(rel, true, true)
			return nil
		}
		e, err := statEntry(p, rel, &st)
		if err != nil {
			return err
		}
		s.readable(p, &st)
		base, inBase := lookupIndex(baseEntries, rel)
		switch {
		case e.Type == tree.Dir && string(xa[xOpaque]) == "y":
			removeBase(rel, true, true)
		case e.Type == tree.Dir && inBase && baseEntries[base].Type == tree.Dir:
			removeBase(rel, false, true) // merge: only the directory's own metadata changes
		default:
			removeBase(rel, true, true)
		}
		if e.Type == tree.File {
			jobs = append(jobs, fileJob{idx: len(added), path: p})
		}
		added = append(added, e)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	pending, err := s.linkFiles(ctx, added, jobs)
	if err != nil {
		return nil, nil, err
	}
	out := make([]tree.Entry, 0, len(baseEntries)+len(added))
	for i, e := range baseEntries {
		if !removed[i] {
			out = append(out, e)
		}
	}
	out = append(out, added...)
	t := &tree.Tree{Entries: out}
	t.Sort()
	if err := t.Validate(); err != nil {
		return nil, nil, err
	}
	return t, pending, nil
}

// lookupIndex returns the index of path p in the sorted entries.
func lookupIndex(entries []tree.Entry, p string) (int, bool) {
	i := sort.Search(len(entries), func(i int) bool { return entries[i].Path >= p })
	return i, i < len(entries) && entries[i].Path == p
}
