package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/store"
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

// TestNoRecordWithoutBirthTimes: a build whose action records carry no birth
// time (a filesystem that keeps none) leaves no record, and one whose records
// all do leaves one.
func TestNoRecordWithoutBirthTimes(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ws := t.TempDir()
	opts := Options{Store: st, Workspace: ws, PlanDigest: digest.FromString("plan")}.withDefaults()
	n := &plan.Node{ID: strings.Repeat("a", 64), Name: "images.a.stages[0]", Kind: plan.KindStage}
	write := func(birth int64) bool {
		tk := &task{n: n, res: &NodeResult{ID: n.ID, Name: n.Name, Kind: n.Kind, Status: StatusCached}}
		tk.result.record = store.ActionStamp{Key: n.ID, Ino: 7, Size: 9, Birth: birth}
		res := &BuildResult{Nodes: []*NodeResult{tk.res}, Cached: 1}
		writeBuildRecord(context.Background(), opts, res, []*task{tk}, nil, false, false)
		p, _, err := recordPath(st, opts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = os.Stat(p)
		return err == nil
	}
	if write(0) {
		t.Fatal("a record was written for action records without birth times")
	}
	if !write(1) {
		t.Fatal("no record was written for action records with birth times")
	}
}
