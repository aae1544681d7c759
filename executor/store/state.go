package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// StateDir returns the directory state/<name>/ for data a user of the store
// keeps beside it (the compile cache, the sandbox's probe results), creating it
// private (0700) like the store. name is one path element, a key as LockKey
// takes. GC and Verify leave state directories alone; Size and StateUsage count
// them. On a read-only store an existing directory is returned, a missing one
// is an error wrapping ErrReadOnly.
func (s *Store) StateDir(name string) (string, error) {
	if err := validKey(name); err != nil {
		return "", fmt.Errorf("store %s: state dir: %w", s.dir, err)
	}
	dir := filepath.Join(s.dir, dirState, name)
	if s.readOnly {
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir, nil
		}
		return "", fmt.Errorf("store %s: state dir %s: %w", s.dir, name, ErrReadOnly)
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("store %s: state dir %s: %w", s.dir, name, err)
		}
	}
	return dir, nil
}

// StateUsage returns the disk usage in bytes of each state directory, by name.
func (s *Store) StateUsage(ctx context.Context) (map[string]int64, error) {
	root := filepath.Join(s.dir, dirState)
	des, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: state usage: %w", s.dir, err)
	}
	out := map[string]int64{}
	for _, de := range des {
		seen := map[inode]bool{}
		var n int64
		err := filepath.WalkDir(filepath.Join(root, de.Name()), func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			var st unix.Stat_t
			if unix.Lstat(p, &st) != nil {
				return nil
			}
			if in := (inode{uint64(st.Dev), st.Ino}); !seen[in] {
				seen[in] = true
				n += st.Blocks * 512
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("store %s: state usage: %w", s.dir, err)
		}
		out[de.Name()] = n
	}
	return out, nil
}

// migrate removes what older versions kept in the store's top directory and
// now live in state directories: the compile cache (compile/) and the
// sandbox's probe results (host.json). They are caches, so dropping them only
// costs one compile and one probe.
func (s *Store) migrate() error {
	for _, name := range []string{"compile", "host.json"} {
		if err := forceRemoveAll(filepath.Join(s.dir, name)); err != nil {
			return err
		}
	}
	return nil
}
