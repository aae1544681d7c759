package store

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/executor/tree"
)

// Child processes re-execute the test binary with STORE_TEST_CHILD set.
const childEnv = "STORE_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		if err := runChild(mode, os.Getenv("STORE_DIR")); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child starts the test binary in the given child mode on dir.
func child(t *testing.T, mode, dir string, extraEnv ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "STORE_DIR="+dir)
	cmd.Env = append(cmd.Env, extraEnv...)
	return cmd
}

// startAndWaitLine starts cmd and waits until it prints want on stdout. It
// returns the rest of the child's output, which the caller must read or kill
// the child.
func startAndWaitLine(t *testing.T, cmd *exec.Cmd, want string) *bufio.Reader {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != want {
		t.Fatalf("child said %q, %v; want %q", line, err, want)
	}
	return r
}

// childLeased is what the locker child keeps under its lease.
const childLeased = "leased by the locker child"

func runChild(mode, dir string) error {
	ctx := context.Background()
	switch mode {
	case "writer":
		return childWriter(ctx, dir)
	case "locker":
		s, err := Open(dir)
		if err != nil {
			return err
		}
		if _, err := s.LockKey(ctx, "held-key"); err != nil {
			return err
		}
		l, err := s.NewLease(ctx, "locker")
		if err != nil {
			return err
		}
		if _, err := s.PutBytes(WithLease(ctx, l), []byte(childLeased)); err != nil {
			return err
		}
		fmt.Println("locked")
		time.Sleep(time.Hour)
		return nil
	case "builder":
		return childBuilder(ctx, dir)
	case "gcload":
		s, err := Open(dir)
		if err != nil {
			return err
		}
		defer s.Close()
		return loadBuilder(ctx, s, "child", 8)
	case "diskfull":
		return childDiskFull(ctx, dir)
	}
	return fmt.Errorf("unknown child mode %q", mode)
}

// childWriter writes large blobs and linked files forever.
func childWriter(ctx context.Context, dir string) error {
	s, err := Open(dir)
	if err != nil {
		return err
	}
	scratch := os.Getenv("SCRATCH")
	rng := rand.NewChaCha8([32]byte{byte(os.Getpid())})
	buf := make([]byte, 8<<20)
	for i := 0; ; i++ {
		rng.Read(buf)
		if _, err := s.PutBytes(ctx, buf); err != nil {
			return err
		}
		p := filepath.Join(scratch, fmt.Sprintf("f%d", i))
		rng.Read(buf)
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			return err
		}
		if _, _, err := s.LinkFile(ctx, p, 0o644, 0, 0); err != nil {
			return err
		}
		if i == 0 {
			fmt.Println("ready")
		} else {
			fmt.Println("wrote", i)
		}
	}
}

// childBuilder builds keys k0..k3 once each across all builders, recording each build
// in BUILD_LOG, and checks that what it holds stays intact.
func childBuilder(ctx context.Context, dir string) error {
	s, err := Open(dir)
	if err != nil {
		return err
	}
	defer s.Close()
	for round := 0; round < 3; round++ {
		for k := 0; k < 4; k++ {
			if err := buildOnce(ctx, s, fmt.Sprintf("k%d", k), os.Getenv("BUILD_LOG")); err != nil {
				return err
			}
		}
	}
	return nil
}

// buildOnce is what an executor does for one key: lease, lock, look up, build on
// a miss, record, and check the result while the lease still holds it.
func buildOnce(ctx context.Context, s *Store, key, buildLog string) error {
	l, err := s.NewLease(ctx, "build-"+key)
	if err != nil {
		return err
	}
	defer l.Release()
	ctx = WithLease(ctx, l)
	unlock, err := s.LockKey(ctx, key)
	if err != nil {
		return err
	}
	defer unlock()
	a, err := s.GetAction(ctx, key)
	if errors.Is(err, ErrNotFound) {
		work, err := s.MkdirTemp("work-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(work)
		os.MkdirAll(filepath.Join(work, "d"), 0o755)
		os.WriteFile(filepath.Join(work, "d", "out"), []byte("output of "+key), 0o644)
		os.WriteFile(filepath.Join(work, "shared"), []byte("shared content"), 0o644)
		_, td, err := s.CommitDir(ctx, work)
		if err != nil {
			return err
		}
		logd, err := s.PutBytes(ctx, []byte("log of "+key+" "+crand.Text()))
		if err != nil {
			return err
		}
		a = &Action{Key: key, Tree: td, Log: logd}
		if err := s.PutAction(ctx, a); err != nil {
			return err
		}
		if buildLog != "" {
			f, err := os.OpenFile(buildLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				return err
			}
			fmt.Fprintln(f, key)
			f.Close()
		}
	} else if err != nil {
		return err
	}
	// While held, everything the entry refers to must be there and intact.
	co, err := s.Checkout(ctx, a.Tree)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(co, "d", "out"))
	if err != nil || string(b) != "output of "+key {
		return fmt.Errorf("checkout of %s: %q, %v", key, b, err)
	}
	if _, err := s.ReadBlob(ctx, a.Log); err != nil {
		return err
	}
	return nil
}

// childDiskFull fills the store (on a 1 MiB tmpfs) and checks the failure.
func childDiskFull(ctx context.Context, dir string) error {
	s, err := Open(dir)
	if err != nil {
		return err
	}
	var werr error
	n := 0
	for i := 0; i < 100; i++ {
		b := make([]byte, 64<<10)
		b[0], b[1] = byte(i), byte(i>>8)
		if _, werr = s.PutBytes(ctx, b); werr != nil {
			break
		}
		n++
	}
	if werr == nil {
		return errors.New("store never filled up")
	}
	if !errors.Is(werr, ENOSPC()) || !strings.Contains(werr.Error(), dir) {
		return fmt.Errorf("want ENOSPC naming %s, got %v", dir, werr)
	}
	// Nothing partial: no temp files left, every blob verifies.
	left, _ := os.ReadDir(s.session)
	if len(left) != 0 {
		return fmt.Errorf("temp files left after ENOSPC: %v", left)
	}
	rep, err := s.Verify(ctx)
	if err != nil || !rep.OK() || rep.Blobs != n {
		return fmt.Errorf("verify after ENOSPC: %+v, %v (wrote %d)", rep, err, n)
	}
	// Free space (nothing refers to the blobs) and write again.
	if _, err := s.GC(ctx, 0); err != nil {
		return err
	}
	if _, err := s.PutBytes(ctx, make([]byte, 64<<10)); err != nil {
		return fmt.Errorf("write after freeing space: %w", err)
	}
	fmt.Println("OK", n)
	return nil
}

// newStore opens a store in a fresh temporary directory.
func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writeFiles creates files (content), dirs (trailing slash) and symlinks ("->target")
// under dir, with the given modes.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(strings.TrimPrefix(content, "->"), p)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// checkAllBlobs reads every blob through OpenBlob and fails on any error.
func checkAllBlobs(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	shards, _ := os.ReadDir(filepath.Join(s.Dir(), dirBlobs))
	for _, sh := range shards {
		des, _ := os.ReadDir(filepath.Join(s.Dir(), dirBlobs, sh.Name()))
		for _, de := range des {
			d := digest.NewDigestFromEncoded(digest.SHA256, de.Name())
			r, err := s.OpenBlob(d)
			if err != nil {
				t.Fatalf("open %s: %v", d, err)
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				t.Fatalf("read %s: %v", d, err)
			}
			r.Close()
			n++
		}
	}
	return n
}

func mustTree(t *testing.T, s *Store, d digest.Digest) *tree.Tree {
	t.Helper()
	tr, err := s.GetTree(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// mustSession returns s's session directory, making it if s has not yet.
func mustSession(t testing.TB, s *Store) string {
	t.Helper()
	d, err := s.sessionDir()
	if err != nil {
		t.Fatal(err)
	}
	return d
}
