package builtin

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxSymlinkHops bounds symbolic link resolution, like the kernel's ELOOP.
const maxSymlinkHops = 40

// maxPathLen and maxNameLen are PATH_MAX and NAME_MAX.
const (
	maxPathLen = 4096
	maxNameLen = 255
)

// maxID is the largest valid uid or gid ((uid_t)-1 means "unchanged").
const maxID = 1<<32 - 2

// fsys is a directory confined by an os.Root, with chroot-style resolution
// of intermediate symbolic links.
type fsys struct {
	root *os.Root
}

func openFsys(dir string) (*fsys, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &fsys{root: r}, nil
}

func (t *fsys) Close() error { return t.root.Close() }

// treePath checks that the option field holds a tree-absolute path and
// returns it relative to the root, clean, with "." for "/".
func treePath(field, p string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("%s: empty path", field)
	case !strings.HasPrefix(p, "/"):
		return "", fmt.Errorf("%s: path %q is not absolute (paths are tree-absolute, like /etc/hostname)", field, p)
	case strings.ContainsRune(p, 0):
		return "", fmt.Errorf("%s: path %q contains a NUL byte", field, p)
	case len(p) > maxPathLen:
		return "", fmt.Errorf("%s: path is longer than %d bytes", field, maxPathLen)
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", fmt.Errorf("%s: path %q contains \"..\"", field, p)
		}
		if len(c) > maxNameLen {
			return "", fmt.Errorf("%s: path %q has a component longer than %d bytes", field, p, maxNameLen)
		}
	}
	rel := path.Clean(p)[1:]
	if rel == "" {
		rel = "."
	}
	return rel, nil
}

// show returns the tree-absolute form of a root-relative path, for errors.
func show(rel string) string {
	if rel == "." {
		return "/"
	}
	return "/" + rel
}

func joinRel(dir, name string) string {
	if dir == "." || dir == "" {
		return name
	}
	return dir + "/" + name
}

func splitRel(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

// resolveDir resolves the directory rel (relative to the root) to a path
// without symbolic links, following links with chroot semantics: an absolute
// target starts again at the root and ".." never climbs above it. With create,
// missing components are created with mode 0755; otherwise a missing
// component is an fs.ErrNotExist error.
func (t *fsys) resolveDir(rel string, create bool) (string, error) {
	var done []string
	todo := splitRel(rel)
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		if c == ".." {
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cur := joinRel(strings.Join(done, "/"), c)
		fi, err := t.root.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := t.root.Mkdir(cur, 0o755); err != nil {
				return "", err
			}
			// The umask must not change the result.
			if err := t.root.Chmod(cur, 0o755); err != nil {
				return "", err
			}
			done = append(done, c)
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink != 0:
			if hops++; hops > maxSymlinkHops {
				return "", &fs.PathError{Op: "resolve", Path: show(cur), Err: syscall.ELOOP}
			}
			target, err := t.root.Readlink(cur)
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(target, "/") {
				done = done[:0]
			}
			todo = append(splitRel(target), todo...)
		case fi.IsDir():
			done = append(done, c)
		default:
			return "", &fs.PathError{Op: "resolve", Path: show(cur), Err: syscall.ENOTDIR}
		}
	}
	if len(done) == 0 {
		return ".", nil
	}
	return strings.Join(done, "/"), nil
}

// locate resolves the parent of rel (which must not be ".") and returns the
// path of rel's final component under the resolved parent. The final
// component itself is not followed.
func (t *fsys) locate(rel string, create bool) (string, error) {
	dir, base := path.Split(rel)
	rdir, err := t.resolveDir(dir, create)
	if err != nil {
		return "", err
	}
	return joinRel(rdir, base), nil
}

// clear removes whatever non-directory is at full so that it can be
// recreated; it reports whether a directory is there (left in place).
func (t *fsys) clear(full string) (isDir bool, err error) {
	fi, err := t.root.Lstat(full)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if fi.IsDir() {
		return true, nil
	}
	return false, t.root.Remove(full)
}

// owner is a requested owner. Strict owners must be applied; others are
// applied where the kernel permits.
type owner struct {
	uid, gid int
	strict   bool
}

var rootOwner = owner{0, 0, false}

// lchown sets the owner of full without following a final symbolic link.
func (t *fsys) lchown(full string, o owner) error {
	if fi, err := t.root.Lstat(full); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == o.uid && int(st.Gid) == o.gid {
			return nil
		}
	}
	err := t.root.Lchown(full, o.uid, o.gid)
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
		if !o.strict || (o.uid == 0 && o.gid == 0) {
			return nil
		}
		if os.Getenv(OwnerXattrEnv) == "1" && t.recordOwner(full, o) == nil {
			return nil
		}
		return fmt.Errorf("set owner of %s to %d:%d: not permitted here (the sandbox must map this id): %w", show(full), o.uid, o.gid, err)
	}
	return fmt.Errorf("set owner of %s to %d:%d: %w", show(full), o.uid, o.gid, err)
}

// fileMode converts Unix permission bits (07777) to an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

// unixMode converts an fs.FileMode's permission and special bits to 07777.
func unixMode(fm fs.FileMode) uint32 {
	m := uint32(fm.Perm())
	if fm&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if fm&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if fm&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

// setAttrs applies owner then mode (chown clears setuid bits, so the mode
// comes last). full must not be a symbolic link.
func (t *fsys) setAttrs(full string, mode uint32, o owner) error {
	if err := t.lchown(full, o); err != nil {
		return err
	}
	if err := t.root.Chmod(full, fileMode(mode)); err != nil {
		return fmt.Errorf("set mode of %s: %w", show(full), err)
	}
	return nil
}

// writeFile creates a new regular file at full (which must not exist) with
// the contents of r, then sets its owner and mode.
func (t *fsys) writeFile(full string, r io.Reader, mode uint32, o owner) error {
	f, err := t.root.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", show(full), err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", show(full), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", show(full), err)
	}
	return t.setAttrs(full, mode, o)
}

// replaceFile writes data at the tree path rel, replacing a file or symbolic
// link there (never writing through it). With keep, an existing regular
// file's mode and owner are kept; otherwise, and for a new file, mode and o
// are used.
func (t *fsys) replaceFile(rel string, data []byte, mode uint32, o owner, keep bool) error {
	full, err := t.locate(rel, true)
	if err != nil {
		return fmt.Errorf("%s: %w", show(rel), err)
	}
	if fi, err := t.root.Lstat(full); err == nil && keep && fi.Mode().IsRegular() {
		mode = unixMode(fi.Mode())
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			o = owner{int(st.Uid), int(st.Gid), false}
		}
	}
	isDir, err := t.clear(full)
	if err != nil {
		return fmt.Errorf("%s: %w", show(rel), err)
	}
	if isDir {
		return fmt.Errorf("%s: is a directory", show(rel))
	}
	return t.writeFile(full, strings.NewReader(string(data)), mode, o)
}

// readFile reads the regular file at tree path rel, following symbolic links
// inside the tree; a missing file returns nil, false.
func (t *fsys) readFile(rel string) ([]byte, bool, error) {
	return t.readFileHops(rel, 0)
}

func (t *fsys) readFileHops(rel string, hops int) ([]byte, bool, error) {
	if hops > maxSymlinkHops {
		return nil, false, &fs.PathError{Op: "read", Path: show(rel), Err: syscall.ELOOP}
	}
	dir, base := path.Split(rel)
	rdir, err := t.resolveDir(dir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", show(rel), err)
	}
	full := joinRel(rdir, base)
	fi, err := t.root.Lstat(full)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", show(rel), err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := t.root.Readlink(full)
		if err != nil {
			return nil, false, err
		}
		if !strings.HasPrefix(target, "/") {
			target = path.Join("/", rdir, target)
		}
		r, err := treePathLoose(target)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", show(rel), err)
		}
		return t.readFileHops(r, hops+1)
	}
	if !fi.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s: not a regular file", show(rel))
	}
	b, err := t.root.ReadFile(full)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", show(rel), err)
	}
	return b, true, nil
}

// treePathLoose cleans an absolute symlink target to a root-relative path,
// clamping ".." at the root (chroot semantics).
func treePathLoose(p string) (string, error) {
	rel := path.Clean("/" + p)[1:]
	if rel == "" {
		return "", errors.New("symbolic link to the tree root")
	}
	return rel, nil
}

// OwnerXattrEnv is the environment variable that, set to "1" (by an executor
// running without root, whose sandbox maps a single id), makes an owner the
// kernel refuses be recorded in the OwnerXattr extended attribute of the path
// instead of failing the stage. The executor applies it to the committed tree.
const OwnerXattrEnv = "STRATA_OWNER_XATTR"

// OwnerXattr holds "uid:gid" for an owner that could not be set; see OwnerXattrEnv.
const OwnerXattr = "user.strata.owner"

// recordOwner stores o in the OwnerXattr attribute of full (not a symlink).
func (t *fsys) recordOwner(full string, o owner) error {
	f, err := t.root.OpenFile(full, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fsetxattr(int(f.Fd()), OwnerXattr, []byte(fmt.Sprintf("%d:%d", o.uid, o.gid)), 0)
}

// DeviceXattr marks an empty regular file that stands for a device node a
// rootless sandbox could not make: its value is "c MAJOR MINOR" or
// "b MAJOR MINOR". Like OwnerXattr it is written only under OwnerXattrEnv,
// and the executor turns the file into the device entry of the committed
// tree (see ReadRecords).
const DeviceXattr = "user.strata.device"

// recordDevice creates full as an empty file carrying DeviceXattr. It is the
// only writer of the record, so the channel can change in one place.
func (t *fsys) recordDevice(full string, typ, major, minor uint32) error {
	kind := "c"
	if typ == unix.S_IFBLK {
		kind = "b"
	}
	f, err := t.root.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fsetxattr(int(f.Fd()), DeviceXattr, fmt.Appendf(nil, "%s %d %d", kind, major, minor), 0)
}
