package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

func (s *Store) checkoutPath(hex string) string {
	return filepath.Join(s.dir, dirCheckouts, hex)
}

// Checkout returns the path of a directory holding the tree d as a hardlink farm of
// file objects: directories with their modes and owners, symlinks, and files that are
// hardlinks of store objects. It is built once (in tmp/, then renamed into place, with
// LockKey keeping concurrent builders from duplicating the work) and reused afterwards.
// The checkout is read-only: writing to it would change store objects; use it as an
// overlayfs lower directory. With a lease (see WithLease) the tree is added to it, so
// GC keeps the checkout while the lease lives.
func (s *Store) Checkout(ctx context.Context, d digest.Digest) (string, error) {
	p, err := s.checkout(ctx, d)
	if err != nil {
		return "", fmt.Errorf("store %s: checkout %s: %w", s.dir, d, err)
	}
	return p, nil
}

func (s *Store) checkout(ctx context.Context, d digest.Digest) (string, error) {
	hex, err := checkDigest(d)
	if err != nil {
		return "", err
	}
	if err := s.pin(ctx, kindTree, hex); err != nil {
		return "", err
	}
	final := s.checkoutPath(hex)
	if st, err := os.Lstat(final); err == nil && st.IsDir() {
		return final, nil
	}
	release, err := s.LockKey(ctx, "checkout-"+hex)
	if err != nil {
		return "", err
	}
	defer release()
	if st, err := os.Lstat(final); err == nil && st.IsDir() {
		return final, nil
	}
	t, err := s.getTree(ctx, d)
	if err != nil {
		return "", err
	}
	tmp, err := s.tempName("co-")
	if err != nil {
		return "", err
	}
	if err := s.buildCheckout(ctx, t, tmp); err != nil {
		forceRemoveAll(tmp)
		return "", err
	}
	if err := s.placeDir(ctx, tmp, final); err != nil {
		forceRemoveAll(tmp)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			return final, nil // another process won the race
		}
		return "", err
	}
	// Not synced: a checkout is derived from its tree and made again when it
	// is missing, and syncing its directory made the rename durable, never
	// the links inside it (journal order keeps those before the rename).
	return final, nil
}

// placeDir renames the directory tmp to final in a shared section (see place).
func (s *Store) placeDir(ctx context.Context, tmp, final string) error {
	release, err := s.shared(ctx)
	if err != nil {
		return err
	}
	defer release()
	return os.Rename(tmp, final)
}

// buildCheckout materialises t at dir, which must not exist.
func (s *Store) buildCheckout(ctx context.Context, t *tree.Tree, dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	var dirs []tree.Entry
	for _, e := range t.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(e.Path))
		switch e.Type {
		case tree.Dir:
			if err := os.Mkdir(dst, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, e)
		case tree.Symlink:
			if err := os.Symlink(e.Target, dst); err != nil {
				return err
			}
			if s.root {
				if err := os.Lchown(dst, e.UID, e.GID); err != nil {
					return err
				}
			}
		case tree.File:
			obj, err := s.ensureFileObject(ctx, e.Digest, e.Size, e.Mode, e.UID, e.GID)
			if err != nil {
				return fmt.Errorf("%s: %w", e.Path, err)
			}
			if err := os.Link(obj, dst); err != nil {
				if !errors.Is(err, unix.EMLINK) {
					return err
				}
				// The object has as many links as the filesystem allows: copy it.
				r, err := openVerified(obj, e.Digest, e.Size)
				if err != nil {
					return err
				}
				tmp, err := s.copyToTemp(ctx, r, e.Digest, e.Size, e.Mode, e.UID, e.GID)
				r.Close()
				if err != nil {
					return err
				}
				if err := os.Rename(tmp, dst); err != nil {
					os.Remove(tmp)
					return err
				}
			}
		case tree.CharDev, tree.BlockDev, tree.Fifo:
			if err := s.mknod(dst, e); err != nil {
				return fmt.Errorf("%s: %w", e.Path, err)
			}
		default:
			return fmt.Errorf("%w: %s: type %q", ErrUnsupported, e.Path, e.Type)
		}
	}
	// Give directories their final modes, deepest first (the reverse of sorted order
	// visits every directory after its descendants).
	for i := len(dirs) - 1; i >= 0; i-- {
		e := dirs[i]
		dst := filepath.Join(dir, filepath.FromSlash(e.Path))
		if s.root {
			if err := os.Lchown(dst, e.UID, e.GID); err != nil {
				return err
			}
		}
		if err := unix.Chmod(dst, e.Mode); err != nil {
			return &os.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	return os.Chmod(dir, 0o755)
}

// mknod makes the device node or fifo e at dst. Without root a device cannot
// be made: the checkout gets an empty 0600 file in its place, which is never
// read (the manifest says what the entry is; outputs take it from there).
func (s *Store) mknod(dst string, e tree.Entry) error {
	if !s.root {
		return os.WriteFile(dst, nil, 0o600)
	}
	typ := map[tree.Kind]uint32{tree.CharDev: unix.S_IFCHR, tree.BlockDev: unix.S_IFBLK, tree.Fifo: unix.S_IFIFO}[e.Type]
	if err := unix.Mknod(dst, typ|e.Mode, int(unix.Mkdev(e.Major, e.Minor))); err != nil {
		return &os.PathError{Op: "mknod", Path: dst, Err: err}
	}
	if err := os.Lchown(dst, e.UID, e.GID); err != nil {
		return err
	}
	return unix.Chmod(dst, e.Mode) // after chown, and not filtered by the umask
}

// CheckCheckout compares the checkout of the tree d with its manifest: the same
// entries and nothing else, each with its type, permission bits, link target,
// size, owners (when the store runs as root), and every file the very inode of
// its file object. With content, every file's bytes are also hashed against the
// manifest: do that before handing a checkout to a tool that reads it (an
// output assembler), since an object's bytes may have changed in place. A
// difference is an error wrapping ErrCorrupt that names the entry.
func (s *Store) CheckCheckout(ctx context.Context, d digest.Digest, content bool) error {
	if err := s.checkCheckout(ctx, d, content); err != nil {
		return fmt.Errorf("store %s: checkout %s: %w", s.dir, d, err)
	}
	return nil
}

func (s *Store) checkCheckout(ctx context.Context, d digest.Digest, content bool) error {
	hex, err := checkDigest(d)
	if err != nil {
		return err
	}
	t, err := s.getTree(ctx, d)
	if err != nil {
		return err
	}
	dir := s.checkoutPath(hex)
	seen := 0
	err = filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			seen++
		}
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	if seen != len(t.Entries) {
		return fmt.Errorf("%w: it holds %d entries, its tree %d", ErrCorrupt, seen, len(t.Entries))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, e := range t.Entries {
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, e.Path, err)
		}
		bad := func(what string) error {
			return fmt.Errorf("%w: %s: %s differs from its tree", ErrCorrupt, e.Path, what)
		}
		want := map[tree.Kind]uint32{tree.File: unix.S_IFREG, tree.Dir: unix.S_IFDIR, tree.Symlink: unix.S_IFLNK,
			tree.CharDev: unix.S_IFCHR, tree.BlockDev: unix.S_IFBLK, tree.Fifo: unix.S_IFIFO}[e.Type]
		if e.Type.IsDevice() && !s.root {
			want, e.Mode = unix.S_IFREG, 0o600 // the placeholder mknod made
		}
		switch {
		case st.Mode&unix.S_IFMT != want:
			return bad("type")
		case e.Type != tree.Symlink && st.Mode&0o7777 != e.Mode:
			return bad("mode")
		case s.root && (int(st.Uid) != e.UID || int(st.Gid) != e.GID):
			return bad("owner")
		case (e.Type == tree.CharDev || e.Type == tree.BlockDev) && s.root && uint64(st.Rdev) != unix.Mkdev(e.Major, e.Minor):
			return bad("device number")
		}
		switch e.Type {
		case tree.Symlink:
			if l, err := os.Readlink(p); err != nil || l != e.Target {
				return bad("link target")
			}
		case tree.File:
			if st.Size != e.Size {
				return bad("size")
			}
			var obj unix.Stat_t
			linked := unix.Lstat(s.fileObjPath(e.Digest.Encoded(), e.Mode, e.UID, e.GID), &obj) == nil && obj.Dev == st.Dev && obj.Ino == st.Ino
			if linked && !content {
				continue
			}
			// A copy (the object had too many links), or bytes to check.
			g.Go(func() error {
				r, err := openVerified(p, e.Digest, e.Size)
				if err == nil {
					_, err = io.Copy(io.Discard, r)
					r.Close()
				}
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("%s: %w", e.Path, err)
				}
				return gctx.Err()
			})
		}
	}
	return g.Wait()
}
