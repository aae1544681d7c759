package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// flockCtx takes a flock of kind how (LOCK_EX or LOCK_SH) on f, polling with LOCK_NB
// so that ctx can cancel the wait.
func flockCtx(ctx context.Context, f *os.File, how int) error {
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EWOULDBLOCK):
			return fmt.Errorf("flock %s: %w", f.Name(), err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for lock %s: %w", f.Name(), ctx.Err())
		case <-t.C:
		}
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}

// lockPath takes a flock on the file at p, creating it if needed. It retries when the
// file was removed or replaced while it waited (GC removes unheld key lock files), so
// the lock held is always the one on the file now at p. The holder of an exclusive
// lock writes its pid into the file; waiting, when not nil, is called with the pid of
// the holder (0 when unknown) once, before the wait.
func lockPath(ctx context.Context, p string, how int, waiting func(holder int)) (func(), error) {
	for {
		writable := true
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil && readOnlyErr(err) {
			writable = false
			// A read-only store: flock works on a read-only descriptor, and
			// without a lock file nobody else can be writing either.
			if f, err = os.Open(p); errors.Is(err, fs.ErrNotExist) {
				return func() {}, nil
			}
		}
		if err != nil {
			return nil, err
		}
		if waiting != nil && unix.Flock(int(f.Fd()), how|unix.LOCK_NB) != nil {
			waiting(holderPid(f))
			waiting = nil
		}
		if err := flockCtx(ctx, f, how); err != nil {
			f.Close()
			return nil, err
		}
		if !sameFile(f, p) {
			f.Close()
			continue
		}
		if how == unix.LOCK_EX && writable {
			// Best effort: the pid only names the holder to a waiter.
			if f.Truncate(0) == nil {
				f.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0)
			}
		}
		var once sync.Once
		return func() { once.Do(func() { f.Close() }) }, nil
	}
}

// holderPid reads the pid an exclusive holder wrote into the lock file f.
func holderPid(f *os.File) int {
	b := make([]byte, 16)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(string(b[:n]))
	if err != nil {
		return 0
	}
	return pid
}

// LockKey takes an exclusive lock on key, shared by every process using the store, and
// returns the function that releases it. It blocks until the lock is acquired or ctx
// is done. The kernel releases the lock if the holder dies. Builders take it before
// building a key and look the key up again once they hold it, so a key is built once.
// Key locks of one process also exclude each other.
func (s *Store) LockKey(ctx context.Context, key string) (release func(), err error) {
	return s.LockKeyWaiting(ctx, key, nil)
}

// LockKeyWaiting is LockKey that, when the lock is held, calls waiting with the pid of
// the process holding it (0 when unknown) before it waits, so a build can say whom it
// waits for.
func (s *Store) LockKeyWaiting(ctx context.Context, key string, waiting func(holder int)) (release func(), err error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	release, err = lockPath(ctx, filepath.Join(s.dir, dirKeyLocks, key+".lock"), unix.LOCK_EX, waiting)
	if err != nil {
		return nil, fmt.Errorf("store %s: lock key %s: %w", s.dir, key, err)
	}
	return release, nil
}

// Hold takes a shared lock that keeps GC and Verify out until released, blocking while
// one of them runs or until ctx is done. A build holds it from before it writes its
// first object until after its PutAction, and while it uses a checkout. A process must
// not call GC or Verify while it holds Hold itself: they would wait forever.
func (s *Store) Hold(ctx context.Context) (release func(), err error) {
	release, err = lockPath(ctx, filepath.Join(s.dir, gcLockName), unix.LOCK_SH, nil)
	if err != nil {
		return nil, fmt.Errorf("store %s: hold: %w", s.dir, err)
	}
	return release, nil
}

// lockExclusive takes the GC lock exclusively.
func (s *Store) lockExclusive(ctx context.Context) (func(), error) {
	return lockPath(ctx, filepath.Join(s.dir, gcLockName), unix.LOCK_EX, nil)
}
