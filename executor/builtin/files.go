package builtin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// filesOptions are the options of strata.files:
//
//	{"dirs": {"/path": {"mode": 493, "uid": 0, "gid": 0}},
//	 "files": {"/path": {"content": "text", "mode": 420, "uid": 0, "gid": 0}},
//	 "symlinks": {"/path": "target"},
//	 "devices": {"/dev/null": {"type": "char", "major": 1, "minor": 3, "mode": 438, "uid": 0, "gid": 0}}}
//
// Directory mode defaults to 0755, file mode to 0644, device mode to 0600,
// owners to 0:0, content to "". A device's type is "char", "block" or "fifo";
// major and minor (default 0) are for char and block only, and a char device
// 0:0 is refused (overlayfs reads it as a deletion). In a sandbox the executor
// set up, device nodes are recorded (see [RecordsEnv]) and the executor puts
// them in the manifest; otherwise they are made with mknod.
type filesOptions struct {
	Dirs     map[string]dirSpec    `json:"dirs"`
	Files    map[string]fileSpec   `json:"files"`
	Symlinks map[string]string     `json:"symlinks"`
	Devices  map[string]deviceSpec `json:"devices"`
}

type deviceSpec struct {
	Type  string  `json:"type"`
	Major uint32  `json:"major"`
	Minor uint32  `json:"minor"`
	Mode  *uint32 `json:"mode"`
	UID   *uint32 `json:"uid"`
	GID   *uint32 `json:"gid"`
}

type dirSpec struct {
	Mode *uint32 `json:"mode"`
	UID  *uint32 `json:"uid"`
	GID  *uint32 `json:"gid"`
}

type fileSpec struct {
	Content string  `json:"content"`
	Mode    *uint32 `json:"mode"`
	UID     *uint32 `json:"uid"`
	GID     *uint32 `json:"gid"`
}

func or[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// checkAttrs validates a mode and owner option and returns the owner.
func checkAttrs(field string, mode uint32, uid, gid uint32) (owner, error) {
	if mode > 0o7777 {
		return owner{}, fmt.Errorf("%s.mode: %#o is not a permission mode (at most 07777)", field, mode)
	}
	if uid > maxID {
		return owner{}, fmt.Errorf("%s.uid: %d is not a valid id", field, uid)
	}
	if gid > maxID {
		return owner{}, fmt.Errorf("%s.gid: %d is not a valid id", field, gid)
	}
	return owner{int(uid), int(gid), true}, nil
}

func runFiles(ctx context.Context, options []byte, env Env) error {
	var o filesOptions
	if err := decode(options, &o); err != nil {
		return err
	}
	t, err := openTree(env)
	if err != nil {
		return fmt.Errorf("open tree: %w", err)
	}
	defer t.Close()

	for _, p := range slices.Sorted(maps.Keys(o.Dirs)) {
		d := o.Dirs[p]
		field := fmt.Sprintf("dirs[%q]", p)
		rel, err := treePath(field, p)
		if err != nil {
			return err
		}
		mode := or(d.Mode, 0o755)
		own, err := checkAttrs(field, mode, or(d.UID, 0), or(d.GID, 0))
		if err != nil {
			return err
		}
		if err := t.makeDir(rel, mode, own); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(o.Files)) {
		f := o.Files[p]
		field := fmt.Sprintf("files[%q]", p)
		rel, err := treePath(field, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return fmt.Errorf("%s: the tree root cannot be a file", field)
		}
		mode := or(f.Mode, 0o644)
		own, err := checkAttrs(field, mode, or(f.UID, 0), or(f.GID, 0))
		if err != nil {
			return err
		}
		full, err := t.locate(rel, true)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		isDir, err := t.clear(full)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if isDir {
			return fmt.Errorf("%s: %s is a directory", field, show(full))
		}
		if err := t.writeFile(full, strings.NewReader(f.Content), mode, own); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(o.Symlinks)) {
		target := o.Symlinks[p]
		field := fmt.Sprintf("symlinks[%q]", p)
		rel, err := treePath(field, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return fmt.Errorf("%s: the tree root cannot be a symbolic link", field)
		}
		if err := t.symlink(rel, target); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(o.Devices)) {
		d := o.Devices[p]
		field := fmt.Sprintf("devices[%q]", p)
		rel, err := treePath(field, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return fmt.Errorf("%s: the tree root cannot be a device", field)
		}
		mode := or(d.Mode, 0o600)
		own, err := checkAttrs(field, mode, or(d.UID, 0), or(d.GID, 0))
		if err != nil {
			return err
		}
		var typ uint32
		switch d.Type {
		case "char":
			typ = unix.S_IFCHR
			if d.Major == 0 && d.Minor == 0 {
				return fmt.Errorf("%s: a char device 0:0 is overlayfs's mark of a deleted file and cannot be in a tree", field)
			}
		case "block":
			typ = unix.S_IFBLK
		case "fifo":
			typ = unix.S_IFIFO
			if d.Major != 0 || d.Minor != 0 {
				return fmt.Errorf("%s: a fifo has no major or minor number", field)
			}
		default:
			return fmt.Errorf("%s.type: %q is not char, block or fifo", field, d.Type)
		}
		if d.Major >= 1<<12 || d.Minor >= 1<<20 {
			return fmt.Errorf("%s: %d:%d is beyond Linux's 12-bit major and 20-bit minor numbers", field, d.Major, d.Minor)
		}
		full, err := t.locate(rel, true)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if err := t.clearForFile(full); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if err := t.mknod(full, typ, d.Major, d.Minor); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if err := t.setAttrs(full, mode, own); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	}
	return ctx.Err()
}

// mknod creates the device node or fifo full. With a journal a device is
// an empty file and a record (a user namespace cannot make devices, so root
// and rootless builds do the same): the executor makes it a device entry.
func (t *fsys) mknod(full string, typ, major, minor uint32) error {
	if t.rec != nil && typ != unix.S_IFIFO {
		f, err := t.root.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		f.Close()
		kind := tree.CharDev
		if typ == unix.S_IFBLK {
			kind = tree.BlockDev
		}
		return t.rec.record(Record{Path: t.treeRel(full), Device: &Device{Kind: kind, Major: major, Minor: minor}})
	}
	dir, base := path.Split(full)
	d, err := t.root.Open(joinRel(strings.TrimSuffix(dir, "/"), "."))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Mknodat(int(d.Fd()), base, typ|0o600, int(unix.Mkdev(major, minor))); err != nil {
		return fmt.Errorf("mknod %s: %w", show(full), err)
	}
	return nil
}

// makeDir creates the directory rel (parents 0755) or updates an existing
// one, then sets its owner and mode. An existing non-directory is an error.
func (t *fsys) makeDir(rel string, mode uint32, own owner) error {
	full := "."
	if rel != "." {
		var err error
		if full, err = t.locate(rel, true); err != nil {
			return err
		}
		fi, err := t.root.Lstat(full)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("%s exists and is not a directory (%s)", show(full), fi.Mode().Type())
		case err == nil:
		case errors.Is(err, fs.ErrNotExist):
			if err := t.root.Mkdir(full, 0o700); err != nil {
				return err
			}
		default:
			return err
		}
	}
	return t.setAttrs(full, mode, own)
}

// symlink creates (or replaces) the symbolic link rel with a verbatim target.
func (t *fsys) symlink(rel, target string) error {
	if target == "" || strings.ContainsRune(target, 0) || len(target) > maxPathLen {
		return fmt.Errorf("invalid symbolic link target %q", target)
	}
	full, err := t.locate(rel, true)
	if err != nil {
		return err
	}
	isDir, err := t.clear(full)
	if err != nil {
		return err
	}
	if isDir {
		return fmt.Errorf("%s is a directory", show(full))
	}
	if err := t.root.Symlink(target, full); err != nil {
		return fmt.Errorf("symlink %s: %w", show(full), err)
	}
	return t.lchown(full, rootOwner)
}
