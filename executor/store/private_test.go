package store

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSecurityRow40StorePrivate: the store is 0700, so a setuid-root binary a
// build produced under blobs/ or checkouts/ is out of other users' reach; an
// existing store left open by an older strata is closed; a store owned by
// another user is refused.
func TestSecurityRow40StorePrivate(t *testing.T) {
	parent := t.TempDir()
	// t.TempDir's directories are 0700: open them so only the store's own mode
	// stands between another user and its objects.
	for p := parent; p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(parent, "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("new store: %v, mode %v, want 0700", err, fi.Mode().Perm())
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("a 0755 store was left %v", fi.Mode().Perm())
	}
	if os.Geteuid() != 0 {
		t.Skip("the rest needs root: another user's store, and a process of another user")
	}
	// Another user cannot reach what is inside.
	blob := filepath.Join(dir, "blobs")
	if out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "stat", blob).CombinedOutput(); err == nil {
		t.Errorf("user 65534 can stat %s:\n%s", blob, out)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrNotPrivate) {
		t.Fatalf("store of uid 65534 opened by root: %v", err)
	}
}
