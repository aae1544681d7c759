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

	"github.com/strata-build/strata/executor/tree"
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
	// rec, when set, receives the owners and devices meant for the tree
	// (see RecordsEnv); man is the manifest of the tree as the store holds
	// it, the truth about owners the sandbox cannot show; prefix is where
	// root is in both (an extraction directory, say).
	rec    *journal
	man    *tree.Tree
	prefix string
}

func openFsys(dir string) (*fsys, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &fsys{root: r}, nil
}

// openTree opens the stage's target tree with its journal and manifest.
func openTree(env Env) (*fsys, error) {
	t, err := openFsys(env.Tree)
	if err != nil {
		return nil, err
	}
	t.rec, t.man = env.journal, env.TreeManifest
	return t, nil
}

// sub returns the directory full of t as an fsys of its own, sharing the
// journal and manifest.
func (t *fsys) sub(full string) (*fsys, error) {
	r, err := t.root.OpenRoot(full)
	if err != nil {
		return nil, err
	}
	return &fsys{root: r, rec: t.rec, man: t.man, prefix: t.treeRel(full)}, nil
}

// treeRel is the tree path of full, a path of t.
func (t *fsys) treeRel(full string) string {
	if t.prefix == "" {
		return path.Clean(full)
	}
	return path.Join(t.prefix, full)
}

// ownerOf is the owner of the entry full of t, described by fi: the one this
// stage recorded for it, else the manifest's, else the one the sandbox shows
// (which, without root, is root for everything). Applied where permitted.
func (t *fsys) ownerOf(full string, fi fs.FileInfo) owner {
	rel := t.treeRel(full)
	if t.rec != nil {
		if o, ok := t.rec.owner(rel); ok {
			return owner{o[0], o[1], false}
		}
	}
	if t.man != nil {
		if e, ok := t.man.Lookup(rel); ok {
			return owner{e.UID, e.GID, false}
		}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return owner{int(st.Uid), int(st.Gid), false}
	}
	return rootOwner
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
	if err := t.root.Remove(full); err != nil {
		return false, err
	}
	if t.rec != nil {
		return false, t.rec.forget(t.treeRel(full))
	}
	return false, nil
}

// owner is a requested owner. Strict owners must be applied; others are
// applied where the kernel permits.
type owner struct {
	uid, gid int
	strict   bool
}

var rootOwner = owner{0, 0, false}

// lchown sets the owner of full without following a final symbolic link.
// With a journal the owner is recorded whatever the kernel allows: a user
// namespace maps too few ids to set most owners, and the record is what
// the tree gets.
func (t *fsys) lchown(full string, o owner) error {
	if t.rec != nil {
		if err := t.rec.record(Record{Path: t.treeRel(full), Owner: &[2]int{o.uid, o.gid}}); err != nil {
			return fmt.Errorf("record owner of %s: %w", show(full), err)
		}
	}
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
		if t.rec != nil || !o.strict || (o.uid == 0 && o.gid == 0) {
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
		o = t.ownerOf(full, fi)
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
