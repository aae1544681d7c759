package sandbox

import (
	"fmt"
	"runtime"

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
// The thread stays locked until fn returns, for two reasons: the runtime must
// not run other goroutines in that namespace, and bwrap's parent-death signal
// (Pdeathsig, and bwrap's own --die-with-parent) fires when the thread that
// started it exits, so the thread must outlive the sandbox. It is never
// unlocked: the runtime ends a thread whose goroutine exits locked, and the
// namespace, with nothing left in it, goes with it.

// withOverlay runs fn on a thread in a new private mount namespace where cfg's
// overlay is mounted on cfg.Merged; the mount ends with the thread. It
// returns an error, without running fn, when the namespace or the mount could
// not be set up.
func withOverlay(cfg helperConfig, fn func()) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The runtime cannot end the main thread (it would park it for
			// good, in the namespace): hold it here so that the goroutine
			// below runs on another thread, and give it back unchanged.
			inner := make(chan error, 1)
			go func() { inner <- overlayThread(cfg, fn) }()
			err := <-inner
			runtime.UnlockOSThread()
			done <- err
			return
		}
		done <- overlayThread(cfg, fn)
	}()
	return <-done
}

// overlayThread locks the calling goroutine to its thread for good, moves the
// thread into a new mount namespace, mounts the overlay and runs fn.
func overlayThread(cfg helperConfig, fn func()) error {
	runtime.LockOSThread()
	// CLONE_FS too: Go's threads share one fs_struct, which a new mount
	// namespace cannot.
	if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); err != nil {
		return fmt.Errorf("new mount namespace: %w", err)
	}
	// Keep the overlay from propagating back to the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := mountOverlay(cfg); err != nil {
		return err
	}
	// Not unmounted: the overlay goes with the namespace when the thread
	// exits, after Run returned, so the unmount's wait for an RCU grace
	// period is not part of the stage's time. Nothing can use it meanwhile,
	// and removing the mount point outside the namespace is allowed.
	fn()
	return nil
}
