package sandbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The children of the thread tests lock their main goroutine to the main
// thread from the start: TestMain knows where it runs, and no test goroutine
// runs on the main thread.
func init() {
	if m := os.Getenv(childEnv); m == "mainthread" || m == "threads" {
		runtime.LockOSThread()
	}
}

// signalWriter closes ready at its first write.
type signalWriter struct {
	once  sync.Once
	ready chan struct{}
	buf   bytes.Buffer
	mu    sync.Mutex
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.ready) })
	return w.buf.Write(p)
}

// tasksWithMount returns, for each thread of this process whose mount table
// has a mount on dir, that mount's line of mountinfo.
func tasksWithMount(t *testing.T, dir string) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	must(t, err)
	with := map[string]string{}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "mountinfo"))
		if err != nil {
			continue // the thread ended meanwhile
		}
		if line := mountLine(b, dir); line != "" {
			with[task.Name()] = line
		}
	}
	return with
}

// mountLine returns the line of mountinfo whose mount point is dir, or "".
func mountLine(mountinfo []byte, dir string) string {
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return line
		}
	}
	return ""
}

// TestOverlayMountStaysPrivate: as root, overlay staging mounts the overlay
// without a helper process, in a mount namespace of one thread. While the stage runs, only that thread sees the
// mount, which covers the lower directory there (not strata's other threads,
// not the host's init); cancelling still takes the stage down, nothing is
// left next to upper, and the mount ends with the thread.
func TestOverlayMountStaysPrivate(t *testing.T) {
	h := host(t)
	if !h.Root || h.Staging != StagingOverlay {
		t.Skip("needs real root and overlay staging")
	}
	lower, parent := t.TempDir(), t.TempDir()
	must(t, os.WriteFile(filepath.Join(lower, "f"), []byte("lower\n"), 0o644))
	upper := filepath.Join(parent, "upper")
	must(t, os.Mkdir(upper, 0o755))
	marker := uniqueMarker(6543, 0)
	out := &signalWriter{ready: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, h, Spec{Root: busyboxRoot(t), Lower: []string{lower}, Upper: upper,
			Command: []string{"sh", "-c", "cat /run/strata/tree/f; exec sleep " + marker}, Stdout: out, Stderr: out})
		done <- err
	}()
	select {
	case <-out.ready:
	case err := <-done:
		t.Fatalf("the stage ended early: %v: %s", err, out.buf.String())
	}
	// The overlay is mounted over the lower directory, in its namespace only.
	if with := tasksWithMount(t, lower); len(with) != 1 {
		t.Errorf("threads that see the overlay: %v, want exactly the sandbox's one", with)
	}
	for _, p := range []string{"/proc/self/mountinfo", "/proc/1/mountinfo"} {
		if b, err := os.ReadFile(p); err == nil && mountLine(b, lower) != "" {
			t.Errorf("%s lists the overlay", p)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	waitGone(t, marker)
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Errorf("left next to upper: %v", ents)
	}
	// The mount ends with its thread, which exits once Run has returned. A
	// bound on liveness, not a speed check.
	for deadline := time.Now().Add(time.Minute); len(tasksWithMount(t, lower)) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("threads still see the overlay after Run: %v", tasksWithMount(t, lower))
		}
	}
	if out.buf.String() != "lower\n" {
		t.Errorf("the stage read %q through the overlay", out.buf.String())
	}
}

// TestOverlayNotOnMainThread: the runtime cannot end the main thread, so
// withOverlay must never give it a mount namespace of its own, even when its
// goroutine is scheduled there. The child runs with one P, its main goroutine
// on the main thread, so withOverlay's goroutine starts on the main thread.
func TestOverlayNotOnMainThread(t *testing.T) {
	if os.Getenv(childEnv) == "mainthread" {
		mainThreadChild(t)
		return
	}
	h := host(t)
	if !h.Root || h.Staging != StagingOverlay {
		t.Skip("needs real root and overlay staging")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOverlayNotOnMainThread$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=mainthread", "GOMAXPROCS=1", "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// mainThreadChild runs in the child: TestMain's goroutine is on the main
// thread, so this test's own goroutine hands a result back to it.
func mainThreadChild(t *testing.T) {
	dir := t.TempDir()
	lower, upper, work, merged := filepath.Join(dir, "l"), filepath.Join(dir, "u"), filepath.Join(dir, "w"), filepath.Join(dir, "m")
	for _, d := range []string{lower, upper, work, merged} {
		must(t, os.Mkdir(d, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(lower, "f"), []byte("x"), 0o644))
	res := <-mainThreadWork(helperConfig{Lower: []string{lower}, Upper: upper, Work: work, Merged: merged})
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.tid == os.Getpid() {
		t.Errorf("the overlay was mounted on the main thread")
	}
	if !res.sawFile {
		t.Errorf("fn did not see the overlay")
	}
	if res.nsBefore != res.nsAfter {
		t.Errorf("the main thread's mount namespace changed: %s -> %s", res.nsBefore, res.nsAfter)
	}
}

type mainThreadResult struct {
	err               error
	tid               int
	sawFile           bool
	nsBefore, nsAfter string
}

// mainThreadRequests carries work to TestMain's goroutine (the main thread).
var mainThreadRequests = make(chan func(), 1)

// serveMainThread runs the tests and, on the main goroutine, the work they
// send to mainThreadRequests; it returns the tests' exit code.
func serveMainThread(m *testing.M) int {
	code := make(chan int, 1)
	go func() { code <- m.Run() }()
	for {
		select {
		case f := <-mainThreadRequests:
			f()
		case c := <-code:
			return c
		}
	}
}

// mainThreadWork runs withOverlay from the main thread, unlocked, as
// TestMain's goroutine: with GOMAXPROCS=1, withOverlay's goroutine then
// starts on the main thread.
func mainThreadWork(cfg helperConfig) <-chan mainThreadResult {
	ch := make(chan mainThreadResult, 1)
	mainThreadRequests <- func() {
		var r mainThreadResult
		if unix.Gettid() != unix.Getpid() {
			r.err = errors.New("TestMain is not on the main thread")
			ch <- r
			return
		}
		ns := func() string {
			s, _ := os.Readlink("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/ns/mnt")
			return s
		}
		r.nsBefore = ns()
		runtime.UnlockOSThread()
		r.err = withOverlay(cfg, func() {
			r.tid = unix.Gettid()
			_, err := os.Stat(filepath.Join(cfg.Merged, "f"))
			r.sawFile = err == nil
		})
		r.nsAfter = ns()
		ch <- r
	}
	return ch
}

// TestOverlayThreadsOutliveSandboxes: a child's parent-death signal fires when
// the thread that forked it exits, so the threads that run overlay sandboxes
// must never exit: not even one that forked some other long-running child
// before it ran a sandbox. The child runs with one P, so the sandbox's worker
// starts on the thread the test goroutine just used to start such a child.
func TestOverlayThreadsOutliveSandboxes(t *testing.T) {
	if os.Getenv(childEnv) == "threads" {
		threadsChild(t)
		return
	}
	h := host(t)
	if !h.Root || h.Staging != StagingOverlay {
		t.Skip("needs real root and overlay staging")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOverlayThreadsOutliveSandboxes$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=threads", "GOMAXPROCS=1", "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func threadsChild(t *testing.T) {
	dir := t.TempDir()
	lower, upper, work := filepath.Join(dir, "l"), filepath.Join(dir, "u"), filepath.Join(dir, "w")
	for _, d := range []string{lower, upper, work} {
		must(t, os.Mkdir(d, 0o755))
	}
	// A long-running child that dies with the thread that started it.
	marker := uniqueMarker(5432, 0)
	runtime.LockOSThread()
	forker := unix.Gettid()
	sleeper := exec.Command("sleep", marker)
	sleeper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, sleeper.Start())
	runtime.UnlockOSThread()
	defer func() {
		sleeper.Process.Kill()
		sleeper.Wait()
	}()

	var worker int
	must(t, withOverlay(helperConfig{Lower: []string{lower}, Upper: upper, Work: work, Merged: lower}, func() {
		worker = unix.Gettid()
	}))
	if worker != forker {
		t.Skipf("the worker started on thread %d, not %d: the case is not reproduced", worker, forker)
	}
	// The worker goes back to strata's mount namespace after the sandbox, on
	// the same thread. A bound on liveness, not a speed check.
	home, err := os.Readlink("/proc/thread-self/ns/mnt")
	must(t, err)
	wns := "/proc/self/task/" + strconv.Itoa(worker) + "/ns/mnt"
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		ns, err := os.Readlink(wns)
		if err != nil {
			t.Fatalf("the worker's thread is gone: %v", err)
		}
		if ns == home {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker's thread stays in %s, not %s", ns, home)
		}
	}
	if err := sleeper.Process.Signal(syscall.Signal(0)); err != nil || !sleeping(marker) {
		t.Errorf("the child started from the worker's thread died: %v", err)
	}
}

// TestOverlayConcurrentSameLower: stages running at once over the same lower
// directory (two stages on one input tree) each see their own overlay on it,
// and the lower directory stays as it was.
func TestOverlayConcurrentSameLower(t *testing.T) {
	h := host(t)
	if h.Staging != StagingOverlay {
		t.Skip("overlay unavailable")
	}
	root, lower := busyboxRoot(t), t.TempDir()
	must(t, os.WriteFile(filepath.Join(lower, "shared"), []byte("lower\n"), 0o644))
	const n = 4
	uppers := make([]string, n)
	outs := make([]bytes.Buffer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		uppers[i] = filepath.Join(t.TempDir(), "upper")
		must(t, os.Mkdir(uppers[i], 0o755))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var code int
			code, errs[i] = Run(context.Background(), h, Spec{Root: root, Lower: []string{lower}, Upper: uppers[i],
				Stdout: &outs[i], Stderr: &outs[i],
				Command: []string{"sh", "-c", "echo " + strconv.Itoa(i) + " > mine; cat shared; ls"}})
			if errs[i] == nil && code != 0 {
				errs[i] = errors.New("exit " + strconv.Itoa(code))
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("stage %d: %v: %s", i, errs[i], outs[i].String())
		}
		if got := outs[i].String(); got != "lower\nmine\nshared\n" {
			t.Errorf("stage %d saw %q", i, got)
		}
		if b, err := os.ReadFile(filepath.Join(uppers[i], "mine")); err != nil || string(b) != strconv.Itoa(i)+"\n" {
			t.Errorf("stage %d's upper: %q %v", i, b, err)
		}
	}
	if ents, _ := os.ReadDir(lower); len(ents) != 1 {
		t.Errorf("the lower directory changed: %v", ents)
	}
}
