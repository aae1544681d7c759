package store

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/strata-build/strata/executor/tree"
)

// TestTreeCache: decoded trees are served from memory as copies, never once their
// blob is gone; trees the Store did not commit still have every file checked by
// PutAction, trees it committed do not need it.
func TestTreeCache(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	d, _, err := s.PutBlob(ctx, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &tree.Tree{Entries: []tree.Entry{{Path: "f", Type: tree.File, Mode: 0o644, Size: 1, Digest: d}}}
	td, err := s.PutTree(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetTree(ctx, td)
	if err != nil {
		t.Fatal(err)
	}
	got.Entries[0].UID = 1000 // callers may change what they get
	again, err := s.GetTree(ctx, td)
	if err != nil || again.Entries[0].UID != 0 {
		t.Fatalf("a caller's change reached the cache: %+v %v", again, err)
	}

	// Not committed by the Store: PutAction checks each file blob.
	missing := &tree.Tree{Entries: []tree.Entry{{Path: "g", Type: tree.File, Mode: 0o644, Size: 1,
		Digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"}}}
	md, err := s.PutTree(ctx, missing)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutAction(ctx, &Action{Key: strings.Repeat("a", 64), Tree: md}); !errors.Is(err, ErrNotFound) {
		t.Errorf("PutAction of a tree with a missing blob = %v, want ErrNotFound", err)
	}

	// A tree committed under a lease is complete while the lease lives (its
	// files cannot go): PutAction records it. Without a lease it is checked.
	dir := t.TempDir()
	os.WriteFile(dir+"/h", []byte("h"), 0o644)
	if _, nd, err := s.CommitDir(ctx, dir); err != nil || s.isComplete(nd) {
		t.Fatalf("committed without a lease: complete %v, %v", s.isComplete(nd), err)
	}
	l, err := s.NewLease(ctx, "commit")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(dir+"/i", []byte("i"), 0o644)
	_, cd, err := s.CommitDir(WithLease(ctx, l), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s.isComplete(cd) || s.isComplete(md) {
		t.Errorf("complete: committed %v, put %v", s.isComplete(cd), s.isComplete(md))
	}
	if err := s.PutAction(ctx, &Action{Key: strings.Repeat("b", 64), Tree: cd}); err != nil {
		t.Fatal(err)
	}
	l.Release()
	if s.isComplete(cd) {
		t.Error("complete after its lease was released")
	}

	// A tree whose blob was removed behind the cache's back is not served.
	bp, err := s.BlobPath(td)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(bp); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetTree(ctx, td); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetTree of a removed tree = %v, want ErrNotFound", err)
	}
}
