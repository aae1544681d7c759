package executor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestPruneBuildRecords: beyond maxBuildRecords, the least recently used
// records go, and so do temporary ones an hour old.
func TestPruneBuildRecords(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	var want []string
	for i := range maxBuildRecords + 5 {
		name := fmt.Sprintf("%03d.json", i)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		mod := now.Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
		if i >= 5 {
			want = append(want, name)
		}
	}
	// A temporary record a killed strata left an hour ago goes; a fresh one
	// (a build writing it now) stays.
	old := filepath.Join(dir, "000.json"+tmpMark+"old")
	fresh := filepath.Join(dir, "001.json"+tmpMark+"new")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(old, now.Add(-2*time.Hour), now.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	want = append(want, filepath.Base(fresh))
	slices.Sort(want)
	pruneBuildRecords(dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
}

// TestPruneBuildRecordsFew: an old temporary record goes even when the
// records are few.
func TestPruneBuildRecordsFew(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "a.json")
	old := rec + tmpMark + "old"
	for _, p := range []string{rec, old} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	then := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, then, then); err != nil {
		t.Fatal(err)
	}
	pruneBuildRecords(dir)
	if _, err := os.Stat(old); err == nil {
		t.Error("an old temporary record survived")
	}
	if _, err := os.Stat(rec); err != nil {
		t.Errorf("the record went: %v", err)
	}
}
