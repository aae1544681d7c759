package store

import (
	"context"
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

// TestSecurityStoreLinkOfAnotherUser: a store path that is a link another
// user made (in /tmp, where strata looks without HOME) is refused, and the
// directory it points at is left as it was: it was chmod-ed 0700 and filled
// with a store, whatever it was (/etc, say).
func TestSecurityStoreLinkOfAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a link owned by another user")
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Mkdir(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "strata-cache-0")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(link); !errors.Is(err, ErrNotPrivate) {
		t.Fatalf("store through a link of uid 65534: %v", err)
	}
	if fi, _ := os.Stat(victim); fi.Mode().Perm() != 0o755 {
		t.Errorf("the link's target was made %v", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(victim); len(entries) != 0 {
		t.Errorf("the link's target got %d entries", len(entries))
	}
	// A link of one's own is followed.
	if err := os.Lchown(link, 0, 0); err != nil {
		t.Fatal(err)
	}
	s, err := Open(link)
	if err != nil {
		t.Fatalf("store through a link of one's own: %v", err)
	}
	s.Close()
}

// TestSecurityRow29VerifyCoversCheckouts: a checkout edited in place of its
// objects (a file replaced, added, removed, its mode changed) is found by
// Verify and removed, and the next Checkout is built afresh from the objects.
func TestSecurityRow29VerifyCoversCheckouts(t *testing.T) {
	ctx := context.Background()
	for name, edit := range map[string]func(co string) error{
		"replaced": func(co string) error {
			if err := os.Remove(filepath.Join(co, "etc/conf")); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(co, "etc/conf"), []byte("a=2\n"), 0o644)
		},
		"added":   func(co string) error { return os.WriteFile(filepath.Join(co, "etc/new"), nil, 0o644) },
		"removed": func(co string) error { return os.Remove(filepath.Join(co, "etc/link")) },
		"chmod":   func(co string) error { return os.Chmod(filepath.Join(co, "etc"), 0o777) },
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			src := t.TempDir()
			writeFiles(t, src, map[string]string{"etc/conf": "a=1\n", "etc/link": "->conf"})
			_, d, err := s.CommitDir(ctx, src)
			if err != nil {
				t.Fatal(err)
			}
			co, err := s.Checkout(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.CheckCheckout(ctx, d, true); err != nil {
				t.Fatalf("fresh checkout: %v", err)
			}
			if err := edit(co); err != nil {
				t.Fatal(err)
			}
			if err := s.CheckCheckout(ctx, d, false); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("CheckCheckout after the edit: %v", err)
			}
			rep, err := s.Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.RemovedCheckouts) != 1 || rep.RemovedCheckouts[0] != d || rep.OK() {
				t.Fatalf("verify: %+v", rep)
			}
			if co, err = s.Checkout(ctx, d); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(co, "etc/conf")); err != nil || string(b) != "a=1\n" {
				t.Fatalf("new checkout: %q %v", b, err)
			}
		})
	}
}
