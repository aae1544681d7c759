package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFindCompanion: the companion is the file next to the executable with
// exactly the Go build ID strata was linked with; nothing else qualifies.
func TestFindCompanion(t *testing.T) {
	// This test binary stands in for a companion build.
	self, err := os.Executable()
	must(t, err)
	build, err := os.ReadFile(self)
	must(t, err)
	id, err := goBuildID(self)
	if err != nil || id == "" {
		t.Fatalf("build ID of the test binary: %q %v", id, err)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "strata")
	p := filepath.Join(dir, CompanionName)

	if got := findCompanion(exe, id); got != "" {
		t.Errorf("no file: got %q", got)
	}
	must(t, os.Mkdir(p, 0o755))
	if got := findCompanion(exe, id); got != "" {
		t.Errorf("a directory: got %q", got)
	}
	must(t, os.Remove(p))
	must(t, os.WriteFile(p, []byte("#!/bin/sh\nexit 3\n"), 0o755))
	if got := findCompanion(exe, id); got != "" {
		t.Errorf("not a Go binary: got %q", got)
	}
	must(t, os.WriteFile(p, build, 0o755))
	if got := findCompanion(exe, id+"x"); got != "" {
		t.Errorf("another build: got %q", got)
	}
	if got := findCompanion(exe, id); got != p {
		t.Errorf("the linked build: got %q, want %q", got, p)
	}
	if got := findCompanion(exe, ""); got != "" {
		t.Errorf("no build ID linked in: got %q", got)
	}
}

// TestBuiltinBinaryWithoutCompanion: a binary built without a companion build
// ID (go build, go install, tests) binds itself for built-in stages.
func TestBuiltinBinaryWithoutCompanion(t *testing.T) {
	UseCompanion("")
	exe, err := os.Executable()
	must(t, err)
	if got, err := BuiltinBinary(); err != nil || got != exe {
		t.Errorf("BuiltinBinary = %q, %v; want %q", got, err, exe)
	}
}
