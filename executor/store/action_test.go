package store

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestUnchanged: a stamped record reads as unchanged until it is replaced,
// removed, or removed and written again (whose new file may reuse the old
// inode number), or a blob it names goes.
func TestUnchanged(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	log, err := s.Ingest(ctx, "text/plain", strings.NewReader("built"))
	if err != nil {
		t.Fatal(err)
	}
	put := func() ActionStamp {
		t.Helper()
		a := &Action{Key: "node", Log: log.Digest}
		if err := s.PutAction(ctx, a); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetAction(ctx, "node")
		if err != nil {
			t.Fatal(err)
		}
		if got.Stamp() != a.Stamp() || a.Stamp().Key != "node" || a.Stamp().Ino == 0 {
			t.Fatalf("stamp of the record read %+v, of the record written %+v", got.Stamp(), a.Stamp())
		}
		return a.Stamp()
	}
	a := put()
	blobs := []digest.Digest{log.Digest, log.Digest}
	if !s.Unchanged(ctx, []ActionStamp{a}, blobs) {
		t.Fatal("a record just stamped reads as changed")
	}
	// An old use time is refreshed, and that is no change.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(s.actionPath("node"), old, old); err != nil {
		t.Fatal(err)
	}
	if !s.Unchanged(ctx, []ActionStamp{a}, blobs) {
		t.Fatal("a record marked used reads as changed")
	}
	if info, err := os.Stat(s.actionPath("node")); err != nil || time.Since(info.ModTime()) > time.Minute {
		t.Fatalf("use time not refreshed: %v %v", info.ModTime(), err)
	}
	b := put()
	if s.Unchanged(ctx, []ActionStamp{a}, blobs) {
		t.Fatal("a replaced record reads as unchanged")
	}
	if err := os.Remove(s.actionPath("node")); err != nil {
		t.Fatal(err)
	}
	if s.Unchanged(ctx, []ActionStamp{b}, blobs) {
		t.Fatal("a removed record reads as unchanged")
	}
	if c := put(); c.Birth == 0 {
		t.Log("no birth times here: a reused inode number is not told apart")
	} else if s.Unchanged(ctx, []ActionStamp{b}, blobs) {
		t.Fatal("a record removed and written again reads as unchanged")
	}
	c := put()
	if s.Unchanged(ctx, []ActionStamp{c}, []digest.Digest{digest.FromString("missing")}) {
		t.Fatal("a missing blob reads as present")
	}
}
