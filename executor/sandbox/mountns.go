package sandbox

import (
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// As real root the overlay needs no helper process: mount namespaces belong
// to threads, and unshare(CLONE_NEWNS) is allowed in a multithreaded process
// (unlike CLONE_NEWUSER, which is why a build without root keeps the helper).
// withOverlay gives one OS thread a private mount namespace of its own, mounts
// the overlay there and runs fn on that thread; os/exec forks from the calling
// thread, so the bwrap fn starts inherits the namespace, and nothing else in
// strata or on the host ever sees the mount. This saves re-executing the strata
// binary for every stage (tens of milliseconds: paging in the binary and the
// Go runtime's and packages' initialisation).
//
// The threads doing this are workers locked to their thread for good, reused
// from one sandbox to the next, and never end: a parent-death signal
// (Pdeathsig, bwrap's --die-with-parent) fires when the *thread* that forked
// the child exits, so a thread of strata that exited would kill every child it
// had ever started that is still running, including those of other stages
// started from it before it became a worker. For the same reason a worker
// never runs on the main thread, which the runtime must keep free. Between
// sandboxes a worker returns to strata's own mount namespace (setns), which
// also tears the last overlay down off the stage's path.

// nsWorker runs functions, one at a time, on a thread locked to it for good.
type nsWorker struct {
	jobs chan func()
}

var (
	nsMu   sync.Mutex
	nsIdle []*nsWorker
)

// withOverlay runs fn on a thread in a new private mount namespace where cfg's
// overlay is mounted on cfg.Merged; the mount goes when the thread leaves the
// namespace, after withOverlay returned. It returns an error, without running
// fn, when the namespace or the mount could not be set up.
func withOverlay(cfg helperConfig, fn func()) error {
	w, err := idleWorker()
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	w.jobs <- func() { done <- overlayThread(cfg, fn) }
	return <-done
}

// idleWorker returns an idle worker, starting one when there is none.
func idleWorker() (*nsWorker, error) {
	nsMu.Lock()
	if n := len(nsIdle); n > 0 {
		w := nsIdle[n-1]
		nsIdle = nsIdle[:n-1]
		nsMu.Unlock()
		return w, nil
	}
	nsMu.Unlock()
	w := &nsWorker{jobs: make(chan func())}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			w.serve(started)
			return
		}
		// On the main thread: hold it while another goroutine, which
		// therefore starts on another thread, locks that one; then give
		// the main thread back.
		inner := make(chan error, 1)
		go w.serve(inner)
		err := <-inner
		runtime.UnlockOSThread()
		started <- err
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return w, nil
}

// serve locks the goroutine to its thread for good and runs w's jobs, going
// back to strata's mount namespace and working directory after each. It
// reports on started whether it could start. The thread gets a cwd, root and
// umask of its own (CLONE_FS: a thread that shares them can change neither
// mount namespace); strata never changes the process's.
func (w *nsWorker) serve(started chan<- error) {
	runtime.LockOSThread()
	home, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread() // unchanged: the thread may serve others
		started <- fmt.Errorf("open own mount namespace: %w", err)
		return
	}
	cwd, err := unix.Open(".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Unshare(unix.CLONE_FS)
	}
	if err != nil {
		unix.Close(home)
		if cwd >= 0 {
			unix.Close(cwd)
		}
		runtime.UnlockOSThread()
		started <- fmt.Errorf("own working directory: %w", err)
		return
	}
	started <- nil
	for job := range w.jobs {
		job()
		if unix.Setns(home, unix.CLONE_NEWNS) != nil || unix.Fchdir(cwd) != nil {
			// Stuck in a sandbox's namespace: the thread must neither run
			// anything else nor end (see above), so it parks for good.
			select {}
		}
		nsMu.Lock()
		nsIdle = append(nsIdle, w)
		nsMu.Unlock()
	}
}

// overlayThread, on a worker's thread, moves the thread into a new mount
// namespace, mounts the overlay and runs fn.
func overlayThread(cfg helperConfig, fn func()) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("new mount namespace: %w", err)
	}
	// Keep the overlay from propagating back to the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := mountOverlay(cfg); err != nil {
		return err
	}
	if err := bindInputs(cfg); err != nil {
		return err
	}
	fn()
	return nil
}
