package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Row 1: SIGKILL during writes.
func TestKillDuringWrite(t *testing.T) {
	dir := t.TempDir()
	for round := 0; round < 3; round++ {
		scratch := t.TempDir()
		cmd := child(t, "writer", dir, "SCRATCH="+scratch)
		out := startAndWaitLine(t, cmd, "ready")
		// The child reports each write: kill it a random number of writes in,
		// in the middle of the next one.
		for range rand.IntN(6) {
			if _, err := out.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		left, _ := os.ReadDir(filepath.Join(dir, dirTmp))
		if len(left) != 0 {
			t.Fatalf("round %d: tmp/ holds %d entries after reopening, want none (the dead writer's swept, no new session before a write)", round, len(left))
		}
		n := checkAllBlobs(t, s)
		if n == 0 {
			t.Fatal("no blob survived")
		}
		rep, err := s.Verify(context.Background())
		if err != nil || !rep.OK() {
			t.Fatalf("round %d: Verify = %+v, %v", round, rep, err)
		}
		// The store still takes writes.
		if _, err := s.PutBytes(context.Background(), []byte(fmt.Sprint("after kill ", round))); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

// Row 5: disk full, on a 1 MiB tmpfs in a private mount namespace.
func TestDiskFull(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and unshare to mount a small tmpfs")
	}
	dir := t.TempDir()
	exe, _ := os.Executable()
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-ec",
		`mount -t tmpfs -o size=1m tmpfs "$1"; exec "$2" -test.run='^$'`, "sh", dir, exe)
	cmd.Env = append(os.Environ(), childEnv+"=diskfull", "STORE_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(string(out), "unshare failed") {
		t.Skipf("unshare unavailable: %s", out)
	}
	if err != nil || !strings.HasPrefix(string(out), "OK ") {
		t.Fatalf("disk-full child: %v\n%s", err, out)
	}
}

// Row 8: a lock holder killed with SIGKILL releases its locks and its lease;
// while it lives, GC runs without waiting for it and keeps what it leased.
func TestLockHolderKilled(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cmd := child(t, "locker", dir)
	startAndWaitLine(t, cmd, "locked")
	held := digest.FromString(childLeased)

	// A cancelled context: LockKey gives up at once unless the lock is free.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.LockKey(cancelled, "held-key"); !errors.Is(err, context.Canceled) {
		t.Fatalf("LockKey while the child holds it = %v, want Canceled", err)
	}
	ctx := context.Background()
	if _, err := s.GC(ctx, 0); err != nil {
		t.Fatalf("GC while the child holds a lease: %v", err)
	}
	if !s.HasBlob(held) {
		t.Fatal("GC removed what a live process leased")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	release, err := s.LockKey(ctx, "held-key")
	if err != nil {
		t.Fatalf("LockKey after the holder died: %v", err)
	}
	release()
	if _, err := s.GC(ctx, 0); err != nil {
		t.Fatalf("GC after the holder died: %v", err)
	}
	if s.HasBlob(held) {
		t.Fatal("the lease of a dead process still keeps its blob")
	}
	// The dead child's session directory and lease file went with GC's sweep.
	left, _ := os.ReadDir(filepath.Join(dir, dirTmp))
	if len(left) != 1 {
		t.Fatalf("tmp/ holds %d entries, want only this store's session", len(left))
	}
	if left, _ := os.ReadDir(filepath.Join(dir, dirLeases)); len(left) != 0 {
		t.Fatalf("leases/ holds %v", left)
	}
}

// Row 6: processes build the same keys while GC runs; each key is built once.
func TestConcurrentProcesses(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	buildLog := filepath.Join(t.TempDir(), "builds")
	const n = 3
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := 0; i < n; i++ {
		cmd := child(t, "builder", dir, "BUILD_LOG="+buildLog)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, &out)
	}
	done := make(chan struct{})
	var gcErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := s.GC(context.Background(), -1); err != nil {
				gcErr = err
				return
			}
		}
	}()
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("builder %d: %v\n%s", i, err, outs[i])
		}
	}
	close(done)
	wg.Wait()
	if gcErr != nil {
		t.Fatal(gcErr)
	}
	b, _ := os.ReadFile(buildLog)
	lines := strings.Fields(string(b))
	if diff := strings.Join(lines, " "); len(lines) != 4 {
		t.Fatalf("builds: %s; want each of k0..k3 once", diff)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if seen[l] {
			t.Fatalf("key %s built twice", l)
		}
		seen[l] = true
	}
	if rep, err := s.Verify(context.Background()); err != nil || !rep.OK() {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// Row 6, in one process: goroutines build and check while GC empties the store.
func TestConcurrentGoroutines(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 6; i++ {
				// Different goroutines share keys, so they race on LockKey too.
				if err := buildOnce(ctx, s, fmt.Sprintf("g%d", (g+i)%3), ""); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 10; i++ {
			if _, err := s.GC(ctx, 0); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if rep, err := s.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}
