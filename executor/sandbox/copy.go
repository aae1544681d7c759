package sandbox

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// copyTree copies src into dst with `cp -a` semantics: it keeps modes, owners
// (when permitted), modification times, symlinks and device nodes, and merges
// into what dst already holds, an entry of src replacing a non-directory
// entry of dst. Hard links are copied as separate files; xattrs are not
// copied. It is the fallback staging used where overlayfs is unavailable.
func copyTree(src, dst string) error {
	type dirTime struct {
		path string
		st   *unix.Stat_t
	}
	var dirs []dirTime
	root := os.Geteuid() == 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		mode := st.Mode & unix.S_IFMT
		var existing unix.Stat_t
		if err := unix.Lstat(target, &existing); err == nil {
			if mode == unix.S_IFDIR && existing.Mode&unix.S_IFMT == unix.S_IFDIR {
				mode = 0 // merge into the existing directory
			} else if rel != "." {
				if err := os.RemoveAll(target); err != nil {
					return err
				}
			}
		}
		switch mode {
		case 0:
		case unix.S_IFDIR:
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
		case unix.S_IFREG:
			if err := copyFile(p, target); err != nil {
				return err
			}
		case unix.S_IFLNK:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		default:
			if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
				return fmt.Errorf("mknod %s: %w", target, err)
			}
		}
		if root {
			if err := unix.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
				return fmt.Errorf("chown %s: %w", target, err)
			}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			// Mode and times are set after the contents were copied, so a
			// read-only directory can still be filled.
			dirs = append(dirs, dirTime{target, &st})
			return nil
		case unix.S_IFLNK:
		default:
			if err := unix.Chmod(target, st.Mode&0o7777); err != nil {
				return fmt.Errorf("chmod %s: %w", target, err)
			}
		}
		return setTimes(target, &st)
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := unix.Chmod(dirs[i].path, dirs[i].st.Mode&0o7777); err != nil {
			return fmt.Errorf("chmod %s: %w", dirs[i].path, err)
		}
		if err := setTimes(dirs[i].path, dirs[i].st); err != nil {
			return err
		}
	}
	return nil
}

func setTimes(p string, st *unix.Stat_t) error {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", p, err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
