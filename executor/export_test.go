package executor

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
)

// TestPreviousLinkToVerifies: a file of an earlier export is taken only when
// its bytes still hash to the tree's digest; one changed since it was
// identified is left for the caller to copy, and no link of it remains.
func TestPreviousLinkToVerifies(t *testing.T) {
	oldDir, newDir := t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(oldDir, "same"), []byte("a\n"), 0o644))
	must(os.WriteFile(filepath.Join(oldDir, "changed"), []byte("b\n"), 0o644)) // the tree says "c\n"
	entry := func(name, content string) tree.Entry {
		return tree.Entry{Path: name, Type: tree.File, Digest: digest.FromString(content), Size: int64(len(content)), Mode: 0o640}
	}
	same, changed := entry("same", "a\n"), entry("changed", "c\n")
	oldRoot, err := os.OpenRoot(oldDir)
	must(err)
	newRoot, err := os.OpenRoot(newDir)
	must(err)
	defer newRoot.Close()
	p := &previous{root: oldRoot, entries: map[string]tree.Entry{"same": same, "changed": changed}}
	defer p.close()
	var into dirFDs
	defer into.close()

	if !p.linkTo(newRoot, &into, same, false) {
		t.Fatal("an unchanged file was not taken")
	}
	var a, b syscall.Stat_t
	must(syscall.Stat(filepath.Join(oldDir, "same"), &a))
	must(syscall.Stat(filepath.Join(newDir, "same"), &b))
	if a.Ino != b.Ino || b.Mode&0o777 != 0o640 {
		t.Errorf("same: inode %d vs %d, mode %o; want one inode, mode 640", a.Ino, b.Ino, b.Mode&0o777)
	}
	if p.linkTo(newRoot, &into, changed, false) {
		t.Error("a file whose bytes no longer match the tree was taken")
	}
	if _, err := os.Lstat(filepath.Join(newDir, "changed")); !os.IsNotExist(err) {
		t.Errorf("the refused link was left behind: %v", err)
	}
	if os.Geteuid() != 0 {
		return
	}
	// As root the link gets the tree's owner through its descriptor.
	must(os.WriteFile(filepath.Join(oldDir, "owned"), []byte("o\n"), 0o644))
	owned := entry("owned", "o\n")
	owned.UID, owned.GID = 1234, 4321
	p.entries["owned"] = owned
	if !p.linkTo(newRoot, &into, owned, true) {
		t.Fatal("an unchanged file was not taken")
	}
	must(syscall.Stat(filepath.Join(newDir, "owned"), &b))
	if b.Uid != 1234 || b.Gid != 4321 || b.Mode&0o7777 != 0o640 {
		t.Errorf("owned: %d:%d mode %o, want 1234:4321 mode 640", b.Uid, b.Gid, b.Mode&0o7777)
	}
}

// TestTreeMediaTypeAgrees: the store leases a tree's files by the tree's
// media type; if the table's and the store's ever differ, GC could delete
// the files of a leased tree.
func TestTreeMediaTypeAgrees(t *testing.T) {
	if MediaTypeTree != store.TreeMediaType {
		t.Fatalf("output table says %q, the store %q", MediaTypeTree, store.TreeMediaType)
	}
}

// TestSweepStaging: the staging directories of exports killed builds left
// behind are removed by the next build's first export into that directory,
// whichever image they were for; one another build holds, one made moments
// ago, and anything not named as staging stay.
func TestSweepStaging(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Minute)
	for _, n := range []string{".img.tmp-left", ".img.tmp-held", ".img.tmp-new", ".other.tmp-left", ".strata"} {
		if err := os.MkdirAll(filepath.Join(dir, n, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if n != ".img.tmp-new" {
			if err := os.Chtimes(filepath.Join(dir, n), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	held, err := holdStaging(r, ".img.tmp-held")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	sweepStaging(r)
	for n, want := range map[string]bool{".img.tmp-left": false, ".img.tmp-held": true, ".img.tmp-new": true, ".other.tmp-left": false, ".strata": true} {
		if _, err := os.Lstat(filepath.Join(dir, n)); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", n, err == nil, want)
		}
	}
}
