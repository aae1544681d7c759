package output

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// inodeKey identifies a file on the host.
type inodeKey struct{ dev, ino uint64 }

func inodeOf(fi fs.FileInfo) (inodeKey, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return inodeKey{}, false
	}
	return inodeKey{uint64(st.Dev), st.Ino}, true
}

// errSharedInodes reports a checkout in which two file entries are the same inode.
var errSharedInodes = errors.New("checkout has hardlinked files")

// checkCheckout verifies that dir holds exactly the tree: the same paths with the
// same types, file sizes and symlink targets. Ownership, modes, times and xattrs
// are not compared: every format takes them from the manifest, and device nodes
// and fifos too, so whatever non-directory stands in for one (a checkout made
// without root cannot hold a device) is accepted. It returns
// errSharedInodes (after the full check) when two files are one inode, which is
// common in a store's hardlink farm when two files have the same content.
func checkCheckout(ctx context.Context, t *tree.Tree, dir string) error {
	seen := 0
	inodes := map[inodeKey]bool{}
	shared := false
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			if !d.IsDir() {
				return fmt.Errorf("%w: %s is not a directory", ErrCheckout, dir)
			}
			return nil
		}
		rel = filepath.ToSlash(rel)
		e, ok := t.Lookup(rel)
		if !ok {
			return fmt.Errorf("%w: %q is not in the tree", ErrCheckout, rel)
		}
		seen++
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case e.Type.IsDevice() && !fi.IsDir():
		case e.Type == tree.Dir && fi.Mode().IsDir():
		case e.Type == tree.File && fi.Mode().IsRegular():
			if fi.Size() != e.Size {
				return fmt.Errorf("%w: %q is %d bytes, the tree says %d", ErrCheckout, rel, fi.Size(), e.Size)
			}
			if k, ok := inodeOf(fi); ok {
				shared = shared || inodes[k]
				inodes[k] = true
			}
		case e.Type == tree.Symlink && fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if target != e.Target {
				return fmt.Errorf("%w: symlink %q points to %q, the tree says %q", ErrCheckout, rel, target, e.Target)
			}
		default:
			return fmt.Errorf("%w: %q is %v, the tree says %s", ErrCheckout, rel, fi.Mode().Type(), e.Type)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrCheckout) || ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%w: %v", ErrCheckout, err)
	}
	if seen != len(t.Entries) {
		return fmt.Errorf("%w: %s holds %d of the tree's %d entries", ErrCheckout, dir, seen, len(t.Entries))
	}
	if shared {
		return errSharedInodes
	}
	return nil
}

// hasDevices reports whether t holds a device node or a fifo.
func hasDevices(t *tree.Tree) bool {
	for _, e := range t.Entries {
		if e.Type.IsDevice() {
			return true
		}
	}
	return false
}

// stageMode says how stage fills a directory.
type stageMode struct {
	// devices creates device nodes and fifos; without it they are left out, for
	// tools that are given them another way (squashfs pseudo files, debugfs).
	devices bool
	// rename maps a tree path to the path it is staged at; nil stages every
	// entry at its own path.
	rename func(string) string
	// link allows hardlinking a source file when no other entry uses its inode;
	// the staged inode's metadata is then left alone.
	link bool
	// meta sets each entry's mode and, when chown is set, its owner; files are copied.
	meta  bool
	chown bool
}

// sourceDir returns a directory holding the tree's data, without its device
// nodes and fifos, for a tool that overrides all metadata itself and is given
// the devices another way: opts.Checkout when it is suitable, otherwise a staging
// directory made with hardlinks where possible. Unless sharedOK (the tool ignores
// hardlinks), a suitable directory has one inode per file; a checkout is never
// suitable for a tree with devices, which the tool must not read from it. The
// returned function removes whatever was made.
func sourceDir(ctx context.Context, t *tree.Tree, c Contents, opts Options, sharedOK bool) (string, func(), error) {
	if opts.Checkout != "" && !hasDevices(t) {
		err := checkCheckout(ctx, t, opts.Checkout)
		if err == nil || sharedOK && errors.Is(err, errSharedInodes) {
			return opts.Checkout, func() {}, nil
		}
		if !errors.Is(err, errSharedInodes) {
			return "", nil, err
		}
	}
	return stagedDir(ctx, t, c, opts, stageMode{link: true})
}

// stagedDir materializes t in a new temporary directory.
func stagedDir(ctx context.Context, t *tree.Tree, c Contents, opts Options, mode stageMode) (string, func(), error) {
	if opts.Checkout != "" && (mode.meta || hasDevices(t)) {
		if err := checkCheckout(ctx, t, opts.Checkout); err != nil && !errors.Is(err, errSharedInodes) {
			return "", nil, err
		}
	}
	work, cleanup, err := workDir(opts, "strata-stage-*")
	if err != nil {
		return "", nil, err
	}
	root := filepath.Join(work, "root")
	if err := stage(ctx, t, c, opts, root, mode); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("stage tree: %w", err)
	}
	return root, cleanup, nil
}

// stage creates root and the tree in it. Directories are made writable by their
// owner until the end, when meta applies the manifest's modes children first.
func stage(ctx context.Context, t *tree.Tree, c Contents, opts Options, root string, mode stageMode) error {
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	used := map[inodeKey]bool{}
	staged := func(e tree.Entry) string {
		p := e.Path
		if mode.rename != nil {
			p = mode.rename(p)
		}
		return filepath.Join(root, filepath.FromSlash(p))
	}
	for _, e := range t.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := staged(e)
		var err error
		switch e.Type {
		case tree.Dir:
			err = os.Mkdir(p, 0o755)
		case tree.Symlink:
			err = os.Symlink(e.Target, p)
		case tree.File:
			err = stageFile(c, opts, e, p, mode, used)
		case tree.CharDev, tree.BlockDev, tree.Fifo:
			if mode.devices {
				err = mknod(p, e)
			}
		}
		if err != nil {
			return fmt.Errorf("%q: %w", e.Path, err)
		}
	}
	if !mode.meta {
		return nil
	}
	for i := len(t.Entries) - 1; i >= 0; i-- {
		e := t.Entries[i]
		if e.Type.IsDevice() && !mode.devices {
			continue
		}
		p := staged(e)
		if err := setMeta(p, e.Type == tree.Symlink, e.UID, e.GID, e.Mode, mode.chown); err != nil {
			return fmt.Errorf("%q: %w", e.Path, err)
		}
	}
	return setMeta(root, false, 0, 0, 0o755, mode.chown)
}

// mknod creates the device node or fifo e at p, mode 0600 until setMeta.
func mknod(p string, e tree.Entry) error {
	var typ uint32
	switch e.Type {
	case tree.CharDev:
		typ = unix.S_IFCHR
	case tree.BlockDev:
		typ = unix.S_IFBLK
	default:
		typ = unix.S_IFIFO
	}
	if err := unix.Mknod(p, typ|0o600, int(unix.Mkdev(e.Major, e.Minor))); err != nil {
		return &os.PathError{Op: "mknod", Path: p, Err: err}
	}
	return nil
}

// setMeta sets owner (when chown) and then mode, since chown clears setuid bits.
func setMeta(p string, symlink bool, uid, gid int, perm uint32, chown bool) error {
	if chown {
		if err := os.Lchown(p, uid, gid); err != nil {
			return err
		}
	}
	if symlink {
		return nil
	}
	return unix.Fchmodat(unix.AT_FDCWD, p, perm, 0)
}

// stageFile creates the file entry e at p, hardlinking its source when mode allows
// and no earlier entry used the same inode, and copying it otherwise.
func stageFile(c Contents, opts Options, e tree.Entry, p string, mode stageMode, used map[inodeKey]bool) error {
	var src string
	if opts.Checkout != "" {
		src = filepath.Join(opts.Checkout, filepath.FromSlash(e.Path))
	} else if s, err := c.BlobPath(e.Digest); err == nil {
		src = s
	}
	if src != "" && mode.link && !mode.meta {
		if fi, err := os.Stat(src); err == nil {
			if k, ok := inodeOf(fi); ok && !used[k] && fi.Size() == e.Size {
				if os.Link(src, p) == nil {
					used[k] = true
					return nil
				}
			}
		}
	}
	var r io.ReadCloser
	var err error
	if src != "" {
		r, err = os.Open(src)
	}
	if src == "" || err != nil && opts.Checkout == "" {
		r, err = c.OpenBlob(e.Digest)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", e.Digest, err)
	}
	defer r.Close()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, e.Size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", e.Digest, err)
	}
	if n != e.Size {
		return fmt.Errorf("%w: blob %s is not %d bytes long", ErrContent, e.Digest, e.Size)
	}
	return nil
}
