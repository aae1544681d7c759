package registry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/strata-build/strata/internal/units"
	"golang.org/x/sys/unix"
)

// safeTarget resolves an install target (made if missing) to the directory
// strata will write, and refuses one that somebody else could change under
// it: install runs as root and writes what it verified into the target, so
// a target another user owns or can write could have its verified slot
// swapped after the check, or a planted link turn the lock file into a
// write anywhere. The target must be owned by the caller and writable by
// nobody else; its parent must not let others rename it (writable by others
// only with the sticky bit, as /tmp). A symbolic link as the target is
// followed only if the caller (or root) owns it.
func safeTarget(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	euid := uint32(os.Geteuid())
	var lst unix.Stat_t
	if err := unix.Lstat(dir, &lst); err != nil {
		return "", err
	}
	if lst.Mode&unix.S_IFMT == unix.S_IFLNK && lst.Uid != euid && lst.Uid != 0 {
		return "", fmt.Errorf("%s is a symbolic link of uid %d: a target is followed through links only of yours", dir, lst.Uid)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	if real, err = filepath.Abs(real); err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Lstat(real, &st); err != nil {
		return "", err
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return "", fmt.Errorf("%s is not a directory", real)
	case st.Uid != euid:
		return "", fmt.Errorf("%s belongs to uid %d, not to you (uid %d): a target must be yours alone", real, st.Uid, euid)
	case st.Mode&0o022 != 0:
		return "", fmt.Errorf("%s can be written by others (mode %04o): a target must be yours alone (chmod go-w)", real, st.Mode&0o7777)
	}
	var pst unix.Stat_t
	if parent := filepath.Dir(real); parent != real {
		if err := unix.Stat(parent, &pst); err != nil {
			return "", err
		}
		if pst.Mode&0o022 != 0 && pst.Mode&unix.S_ISVTX == 0 {
			return "", fmt.Errorf("%s is in %s, which others can write: they could replace the target", real, parent)
		}
	}
	return real, nil
}

// ErrNoSpace is wrapped when a filesystem has too little free space for what
// a pull or an install is about to write.
var ErrNoSpace = errors.New("not enough free space")

// checkSpace refuses to write need bytes into dir's filesystem when they do
// not fit in what an unprivileged user could still write there (Bavail): a
// device installing as root must not fill the blocks kept for root, and
// failing before the download beats failing after most of it. The sizes come
// from the manifest, and every blob is cut off at its size as it streams, so
// a registry that understates them is refused there.
func checkSpace(dir string, need int64) error {
	if need <= 0 {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil // unknown: the writes will say
	}
	if free := int64(st.Bavail) * st.Bsize; need > free {
		return fmt.Errorf("%w in %s: %s needed, %s free", ErrNoSpace, dir, units.Bytes(need), units.Bytes(free))
	}
	return nil
}
