package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// TestFindCompanion: the companion is the file next to the executable with
// exactly the digest strata was linked with; nothing else qualifies.
func TestFindCompanion(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "strata")
	content := []byte("companion build 1")
	sum := sha256.Sum256(content)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	p := filepath.Join(dir, CompanionName)

	if got := findCompanion(exe, digest); got != "" {
		t.Errorf("no file: got %q", got)
	}
	must(t, os.Mkdir(p, 0o755))
	if got := findCompanion(exe, digest); got != "" {
		t.Errorf("a directory: got %q", got)
	}
	must(t, os.Remove(p))
	must(t, os.WriteFile(p, []byte("companion build 2"), 0o755))
	if got := findCompanion(exe, digest); got != "" {
		t.Errorf("another build: got %q", got)
	}
	must(t, os.WriteFile(p, content, 0o755))
	if got := findCompanion(exe, digest); got != p {
		t.Errorf("the linked build: got %q, want %q", got, p)
	}
	if got := findCompanion(exe, ""); got != "" {
		t.Errorf("no digest linked in: got %q", got)
	}
}

// TestBuiltinBinaryWithoutCompanion: a binary built without a companion
// digest (go build, go install, tests) binds itself for built-in stages.
func TestBuiltinBinaryWithoutCompanion(t *testing.T) {
	UseCompanion("")
	exe, err := os.Executable()
	must(t, err)
	if got, err := BuiltinBinary(); err != nil || got != exe {
		t.Errorf("BuiltinBinary = %q, %v; want %q", got, err, exe)
	}
}
