package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestFailureLogSurvivesGC (issue 8): the log of the last failed build
// survives a GC that keeps its record, goes with a GC that drops it, and the
// record is never a cache hit.
func TestFailureLogSurvivesGC(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	log, err := s.Ingest(ctx, "text/plain", strings.NewReader("step 3 failed: exit 1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutFailure(ctx, "node1", log.Digest); err != nil {
		t.Fatal(err)
	}
	if err := s.PutFailure(ctx, "node2", digest.FromString("never stored")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PutFailure with a missing log = %v, want ErrNotFound", err)
	}
	if err := s.PutFailure(ctx, "../x", log.Digest); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("PutFailure with a bad key = %v", err)
	}
	if _, err := s.GetAction(ctx, "node1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a failure record is a cache hit: %v", err)
	}
	if _, err := s.GC(ctx, -1); err != nil {
		t.Fatal(err)
	}
	got, err := s.LastFailure(ctx, "node1")
	if err != nil || got != log.Digest {
		t.Fatalf("LastFailure after GC = %s, %v; want %s", got, err, log.Digest)
	}
	if b, err := s.ReadBlob(ctx, got); err != nil || string(b) != "step 3 failed: exit 1" {
		t.Fatalf("log after GC: %q, %v", b, err)
	}
	// A size limit the record fits in keeps it too.
	size, _ := s.Size(ctx)
	if _, err := s.GC(ctx, size); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LastFailure(ctx, "node1"); err != nil {
		t.Fatalf("LastFailure after GC(size) = %v", err)
	}
	// A success of the key replaces its failure.
	if err := s.PutAction(ctx, &Action{Key: "node1", Log: log.Digest}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LastFailure(ctx, "node1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LastFailure after a success = %v, want ErrNotFound", err)
	}
	if err := s.PutFailure(ctx, "node3", log.Digest); err != nil {
		t.Fatal(err)
	}
	st, err := s.GC(ctx, 0)
	if err != nil || st.FailuresRemoved != 1 || st.ActionsRemoved != 1 {
		t.Fatalf("GC(0) = %+v, %v; want the failure record and the action dropped", st, err)
	}
	if _, err := s.LastFailure(ctx, "node3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LastFailure after GC(0) = %v, want ErrNotFound", err)
	}
	if s.HasBlob(log.Digest) {
		t.Fatal("the log outlived every record")
	}
}

// TestFailureRecordsLRU: failure records and action entries share one LRU
// order, so the most recently used survive a size-limited GC.
func TestFailureRecordsLRU(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	base := time.Now().Add(-time.Hour)
	for i := range 4 {
		d, err := s.PutBytes(ctx, []byte(strings.Repeat(fmt.Sprint(i), 64<<10)))
		if err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("k%d", i)
		p := s.failurePath(key)
		if i%2 == 0 {
			err = s.PutAction(ctx, &Action{Key: key, Log: d})
			p = s.actionPath(key)
		} else {
			err = s.PutFailure(ctx, key, d)
		}
		if err != nil {
			t.Fatal(err)
		}
		tm := base.Add(time.Duration(i) * time.Minute)
		os.Chtimes(p, tm, tm)
	}
	// k1 is the oldest but was looked at last.
	if _, err := s.LastFailure(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	size, _ := s.Size(ctx)
	if _, err := s.GC(ctx, size-(100<<10)); err != nil {
		t.Fatal(err)
	}
	_, err0 := s.GetAction(ctx, "k0")
	_, err1 := s.LastFailure(ctx, "k1")
	_, err2 := s.GetAction(ctx, "k2")
	if !errors.Is(err0, ErrNotFound) || !errors.Is(err2, ErrNotFound) || err1 != nil {
		t.Fatalf("after GC: k0 %v, k1 %v, k2 %v; want k0 and k2 dropped, k1 kept", err0, err1, err2)
	}
	if _, err := s.LastFailure(ctx, "k3"); err != nil {
		t.Fatalf("k3: %v", err)
	}
}

// TestWeakRecordsCollected: weak records are dropped with the LRU order and
// beyond a cap on their number, most recently used kept.
func TestWeakRecordsCollected(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	defer func(n int) { weakCap = n }(weakCap)
	weakCap = 3
	base := time.Now().Add(-time.Hour)
	for i := range 5 {
		key := fmt.Sprintf("w%d", i)
		if err := s.PutWeak(ctx, key, json.RawMessage(`{"n":1}`)); err != nil {
			t.Fatal(err)
		}
		tm := base.Add(time.Duration(i) * time.Minute)
		os.Chtimes(s.weakPath(key), tm, tm)
	}
	if _, err := s.GetWeak(ctx, "w0"); err != nil { // used now: the most recent
		t.Fatal(err)
	}
	st, err := s.GC(ctx, -1)
	if err != nil || st.WeakRemoved != 2 {
		t.Fatalf("GC = %+v, %v; want 2 weak records removed", st, err)
	}
	for i, want := range []bool{true, false, false, true, true} {
		_, err := s.GetWeak(ctx, fmt.Sprintf("w%d", i))
		if (err == nil) != want {
			t.Errorf("w%d: %v, want kept %v", i, err, want)
		}
	}
	if st, err := s.GC(ctx, 0); err != nil || st.WeakRemoved != 3 {
		t.Fatalf("GC(0) = %+v, %v; want every weak record removed", st, err)
	}
}
