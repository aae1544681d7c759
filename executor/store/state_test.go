package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestStateDir: a state directory is private, survives GC(0) and Verify, is
// counted by Size and StateUsage, and its name is one path element. Open
// removes what older versions kept at the top of the store.
func TestStateDir(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "compile"), 0o755)
	os.WriteFile(filepath.Join(dir, "compile", "k.json"), []byte("old plan"), 0o644)
	os.WriteFile(filepath.Join(dir, "host.json"), []byte("{}"), 0o644)
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, old := range []string{"compile", "host.json"} {
		if _, err := os.Stat(filepath.Join(dir, old)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left in the store by Open: %v", old, err)
		}
	}

	sd, err := s.StateDir("compile")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "state", "compile"); sd != want {
		t.Fatalf("StateDir = %s, want %s", sd, want)
	}
	for _, p := range []string{filepath.Dir(sd), sd} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v, mode %v; want 0700", p, err, fi.Mode().Perm())
		}
	}
	if again, err := s.StateDir("compile"); err != nil || again != sd {
		t.Fatalf("second StateDir = %s, %v", again, err)
	}
	if err := os.WriteFile(filepath.Join(sd, "entry"), make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "a/b", "..", ".hidden", "x y"} {
		if _, err := s.StateDir(bad); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("StateDir(%q) = %v, want ErrInvalidKey", bad, err)
		}
	}

	if _, err := s.GC(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	if b, err := os.ReadFile(filepath.Join(sd, "entry")); err != nil || len(b) != 64<<10 {
		t.Fatalf("state after GC and Verify: %d bytes, %v", len(b), err)
	}
	usage, err := s.StateUsage(ctx)
	if err != nil || usage["compile"] < 64<<10 {
		t.Fatalf("StateUsage = %v, %v", usage, err)
	}
	if size, _ := s.Size(ctx); size < 64<<10 {
		t.Fatalf("Size %d does not count the state directory", size)
	}
}
