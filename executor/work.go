package executor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// workDirName is the directory of the store where builds keep their scratch
// space (overlay upper directories, logs, output staging). It lives in the store
// so that committing can hardlink files instead of copying them.
const workDirName = "work"

// workDir is one build's scratch directory <store>/work/w-<random>, guarded by
// an flock on w-<random>.lock for the life of the build. A directory whose lock
// is free belongs to a build that died; openWorkDir removes it.
type workDir struct {
	dir  string
	lock *os.File
}

func openWorkDir(storeDir string) (*workDir, error) {
	base := filepath.Join(storeDir, workDirName)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	sweepWorkDirs(base)
	for attempt := 0; ; attempt++ {
		var rnd [8]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, err
		}
		name := "w-" + hex.EncodeToString(rnd[:])
		lockPath := filepath.Join(base, name+".lock")
		f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			return nil, err
		}
		// A sweeper may have taken the fresh lock file between create and flock
		// and removed it: check it is still ours.
		var st1, st2 unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st1) != nil || unix.Stat(lockPath, &st2) != nil || st1.Ino != st2.Ino || st1.Dev != st2.Dev {
			f.Close()
			if attempt > 3 {
				return nil, errors.New("work directory: lock file keeps disappearing")
			}
			continue
		}
		dir := filepath.Join(base, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			f.Close()
			os.Remove(lockPath)
			return nil, err
		}
		return &workDir{dir: dir, lock: f}, nil
	}
}

// sweepWorkDirs removes the work directories of builds that died.
func sweepWorkDirs(base string) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "w-") || strings.HasSuffix(name, ".lock") {
			continue
		}
		dir := filepath.Join(base, name)
		lockPath := dir + ".lock"
		f, err := os.OpenFile(lockPath, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			// No lock: a build died between removing its lock and its directory,
			// or is creating it right now; only old ones are removed.
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Minute {
				forceRemoveAll(dir)
			}
			continue
		}
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			forceRemoveAll(dir)
			os.Remove(lockPath)
		}
		f.Close()
	}
}

// mkdir makes a fresh directory in the work dir.
func (w *workDir) mkdir(prefix string) (string, error) {
	return os.MkdirTemp(w.dir, prefix)
}

func (w *workDir) close() {
	forceRemoveAll(w.dir)
	os.Remove(w.dir + ".lock")
	w.lock.Close()
}

// forceRemoveAll removes p even when stages left directories without write
// permission in it.
func forceRemoveAll(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(q, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}
