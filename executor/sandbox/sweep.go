package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// runDirPrefix starts the name of every temporary directory the package makes
// (the overlay probe's): strata-run-<pid>-<random>. The owner
// holds an flock on the directory for as long as it uses it, so a directory
// whose owner is gone (kill -9) can be told from one in use even when pids are
// reused or belong to another pid namespace.
const runDirPrefix = "strata-run-"

// lockedTempDir makes a temporary directory for this process and locks it. The
// returned function unlocks and removes it.
func lockedTempDir() (string, func(), error) {
	sweepRunDirsOnce()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", runDirPrefix, os.Getpid()))
	if err != nil {
		return "", nil, err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		os.Remove(dir)
		return "", nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return dir, func() {
		removeAllForce(dir)
		unix.Close(fd)
	}, nil
}

var sweptRunDirs sync.Once

// sweepRunDirsOnce removes, once per process, the temporary directories of
// strata processes that died without cleaning up.
func sweepRunDirsOnce() {
	sweptRunDirs.Do(func() {
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), runDirPrefix+"*"))
		for _, d := range dirs {
			if !ownerDead(filepath.Base(d), runDirPrefix) {
				continue
			}
			fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err != nil {
				continue
			}
			if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
				removeAllForce(d)
			}
			unix.Close(fd)
		}
	})
}
