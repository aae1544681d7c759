package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const companionWS = `package test

images: a: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/hello": content: "hi\n"}]
}
`

// fakeCompanion builds testdata/fakecompanion, a Go binary that fails saying
// "not-the-companion", into dir/strata-sandbox and returns its build ID.
func fakeCompanion(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "strata-sandbox")
	cmd := exec.Command("go", "build", "-o", p, "./testdata/fakecompanion")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build fakecompanion: %v\n%s", err, out)
	}
	id, err := goBuildID(p)
	must(t, err)
	return id
}

// buildWith runs `strata build` of ws with the strata binary bin and a fresh
// cache; it returns the exit code and the output.
func buildWith(t *testing.T, bin, ws string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, "-C", ws, "--cache-dir", t.TempDir(), "--no-progress", "build")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STRATA_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestCompanionMustMatchExec: strata runs built-in stages with the
// strata-sandbox next to it only when that file is the build strata was
// linked with. Another build of that name is ignored and strata runs the stage
// itself; the build it was linked with is used.
func TestCompanionMustMatchExec(t *testing.T) {
	bin := strataBin(t)
	ws := writeWS(t, companionWS)

	// Paired by make build (strataBin does the same): the build works.
	if code, out := buildWith(t, bin, ws); code != 0 {
		t.Fatalf("build with the real companion: exit %d\n%s", code, out)
	}

	// A strata-sandbox of another build next to strata: not used.
	other := t.TempDir()
	b, err := os.ReadFile(bin)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(other, "strata"), b, 0o755))
	fakeCompanion(t, other)
	if code, out := buildWith(t, filepath.Join(other, "strata"), ws); code != 0 || strings.Contains(out, "not-the-companion") {
		t.Errorf("a companion of another build was used: exit %d\n%s", code, out)
	}

	// strata linked with that build's ID runs it for the stage.
	linked, fake := t.TempDir(), t.TempDir()
	must(t, buildStrata(linked, fakeCompanion(t, fake)))
	b, err = os.ReadFile(filepath.Join(fake, "strata-sandbox"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(linked, "strata-sandbox"), b, 0o755))
	if code, out := buildWith(t, filepath.Join(linked, "strata"), ws); code == 0 || !strings.Contains(out, "not-the-companion") {
		t.Errorf("the companion strata was linked with was not used: exit %d\n%s", code, out)
	}
}
