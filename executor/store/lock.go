package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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

// gate orders the store's short write sections against GC's and Verify's
// exclusive ones, across goroutines and processes.
//
// A writer holds locks/gc.lock shared only for the few system calls that put an
// object in place or add it to a lease (see shared); GC holds it exclusively
// only for one slice of deletions (gcSlice). flock is unfair: a stream of
// shared holders whose sections overlap would keep an exclusive waiter out for
// ever. So the exclusive side first takes locks/gc.intent exclusively (a
// turnstile): a process with no shared holder passes the turnstile shared before
// it takes gc.lock, so none gets in while GC waits; a process whose goroutines
// already hold gc.lock probes the turnstile before admitting another one, and
// lets its holders drain instead when GC is waiting. gc.lock then frees as soon
// as the sections in flight end, which takes microseconds.
type gate struct {
	mu      sync.Mutex
	n       int           // goroutines of this Store inside a shared section
	locking bool          // one of them is taking the flock for all
	wake    chan struct{} // closed when n drops to 0 or locking ends
	lock    *os.File
	held    *os.File // the descriptor holding gc.lock shared: lock, or one flockWait opened
	intent  *os.File
	probe   *os.File // a second descriptor of gc.intent for LOCK_NB probes
}

// openGate opens the lock files of the gate. A read-only store has none: it
// cannot be collected by this process, and its writes fail anyway.
func (s *Store) openGate() error {
	if s.readOnly {
		return nil
	}
	var files [3]*os.File
	for i, name := range []string{gcLockName, gcIntentName, gcIntentName} {
		f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			for _, g := range files[:i] {
				g.Close()
			}
			return err
		}
		files[i] = f
	}
	s.gate.lock, s.gate.intent, s.gate.probe = files[0], files[1], files[2]
	return nil
}

func (g *gate) close() {
	for _, f := range []*os.File{g.lock, g.intent, g.probe} {
		if f != nil {
			f.Close()
		}
	}
}

// pending reports whether a GC or Verify waits at the turnstile or runs.
func (g *gate) pending() bool {
	if unix.Flock(int(g.probe.Fd()), unix.LOCK_SH|unix.LOCK_NB) != nil {
		return true
	}
	unix.Flock(int(g.probe.Fd()), unix.LOCK_UN)
	return false
}

// shared enters a write section and returns the function that leaves it. A
// section must be short (no fsync, no hashing, no waiting for other locks) and
// must not enter another one: while GC waits, a nested entry would wait for its
// own section to end.
func (s *Store) shared(ctx context.Context) (func(), error) {
	g := &s.gate
	if g.lock == nil {
		return func() {}, nil
	}
	g.mu.Lock()
	for {
		if g.n > 0 && !g.pending() {
			g.n++
			g.mu.Unlock()
			return g.leave, nil
		}
		if g.n == 0 && !g.locking {
			break
		}
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		wake := g.wake
		g.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, fmt.Errorf("store %s: wait for gc: %w", s.dir, ctx.Err())
		}
		g.mu.Lock()
	}
	g.locking = true
	g.mu.Unlock()
	held, err := flockWait(ctx, g.intent, unix.LOCK_SH)
	if err == nil {
		var lockHeld *os.File
		lockHeld, err = flockWait(ctx, g.lock, unix.LOCK_SH)
		unlockHeld(g.intent, held)
		held = lockHeld
	}
	g.mu.Lock()
	g.locking = false
	if err == nil {
		g.n, g.held = 1, held
	}
	g.wakeAll()
	g.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.dir, err)
	}
	return g.leave, nil
}

// wakeAll wakes the goroutines waiting to enter; g.mu is held.
func (g *gate) wakeAll() {
	if g.wake != nil {
		close(g.wake)
		g.wake = nil
	}
}

func (g *gate) leave() {
	g.mu.Lock()
	g.n--
	if g.n == 0 {
		unlockHeld(g.lock, g.held)
		g.held = nil
		g.wakeAll()
	}
	g.mu.Unlock()
}

// flockWait takes a flock of kind how on the file f names and returns the
// descriptor that holds it: f itself when the lock is free, else a fresh
// descriptor that waits in the kernel, so that it is granted the moment the
// holder lets go (polling would sleep through the short gaps GC leaves between
// its batches, and GC through those between writers). When ctx ends first the
// wait is abandoned: its descriptor is closed once granted, and being its own
// open file its lock never mixes with f's.
func flockWait(ctx context.Context, f *os.File, how int) (*os.File, error) {
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err == nil {
		return f, nil
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		return nil, fmt.Errorf("flock %s: %w", f.Name(), err)
	}
	w, err := os.Open(f.Name())
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(int(w.Fd()), how)
			if !errors.Is(err, unix.EINTR) {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("flock %s: %w", f.Name(), err)
		}
		return w, nil
	case <-ctx.Done():
		go func() { <-done; w.Close() }()
		return nil, fmt.Errorf("wait for lock %s: %w", f.Name(), ctx.Err())
	}
}

// unlockHeld releases a lock flockWait returned for f.
func unlockHeld(f, held *os.File) {
	if held == f {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
	} else if held != nil {
		held.Close()
	}
}

// exclusive waits at the turnstile and then for the write sections in flight to
// end, and returns the function that lets writers in again. Its own descriptors
// conflict with this Store's shared ones, so a GC in a process that also builds
// waits for that process's sections too.
func (s *Store) exclusive(ctx context.Context) (func(), error) {
	intent, err := os.OpenFile(filepath.Join(s.dir, gcIntentName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	heldIntent, err := flockWait(ctx, intent, unix.LOCK_EX)
	if err != nil {
		intent.Close()
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(s.dir, gcLockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		closeFiles(intent, heldIntent)
		return nil, err
	}
	heldLock, err := flockWait(ctx, lock, unix.LOCK_EX)
	if err != nil {
		closeFiles(intent, heldIntent, lock)
		return nil, err
	}
	// Closing a descriptor releases its lock.
	return func() { closeFiles(lock, heldLock, intent, heldIntent) }, nil
}

// closeFiles closes each distinct file once.
func closeFiles(fs ...*os.File) {
	for i, f := range fs {
		if f != nil && !slices.Contains(fs[:i], f) {
			f.Close()
		}
	}
}

// lockRun takes locks/gc.run exclusively for the whole of a GC or Verify, so
// that two of them never interleave. Builds never take it.
func (s *Store) lockRun(ctx context.Context) (func(), error) {
	return lockPath(ctx, filepath.Join(s.dir, gcRunName), unix.LOCK_EX, nil)
}
