package executor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestPruneBuildRecords: beyond maxBuildRecords, the least recently written
// records go.
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
