package store

import (
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// TestSyncTogether: every sync runs, whichever fails, and every failure is
// reported; empty directory names are no syncs at all.
func TestSyncTogether(t *testing.T) {
	errA, errB := errors.New("a failed"), errors.New("b failed")
	var ran atomic.Int32
	ok := func() error { ran.Add(1); return nil }
	err := syncTogether(ok, func() error { ran.Add(1); return errA }, ok, func() error { ran.Add(1); return errB })
	if ran.Load() != 4 {
		t.Errorf("%d of 4 syncs ran", ran.Load())
	}
	if !errors.Is(err, errA) || !errors.Is(err, errB) {
		t.Errorf("syncTogether = %v, want both failures", err)
	}
	if err := syncTogether(); err != nil {
		t.Errorf("no syncs: %v", err)
	}

	dir := t.TempDir()
	if n := len(dirSyncs("", dir, "")); n != 1 {
		t.Errorf("dirSyncs with two empty names: %d syncs, want 1", n)
	}
	missing := filepath.Join(dir, "missing")
	if err := syncTogether(dirSyncs(dir, missing)...); err == nil {
		t.Errorf("syncing a missing directory succeeded")
	}
}
