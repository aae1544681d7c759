package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// copyWorkspace copies a workspace, leaving out any vendored schema.
func copyWorkspace(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if rel == filepath.Join("cue.mod", "pkg") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func strata(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

// TestUpstreamCUEAcceptsExamples: after `strata mod vendor`, the upstream cue
// command vets every example (-c=false: stage modules are schemas, incomplete by
// design) and exports the images the examples define directly.
func TestUpstreamCUEAcceptsExamples(t *testing.T) {
	cueBin, _ := filepath.Abs("../../bin/cue")
	if _, err := os.Stat(cueBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("bin/cue missing in CI (make setup installs it): %v", err)
		}
		t.Skip("bin/cue not installed; run make setup")
	}
	examples, _ := filepath.Glob("../../examples/*")
	if len(examples) < 2 {
		t.Fatalf("expected examples, found %v", examples)
	}
	for _, ex := range examples {
		t.Run(filepath.Base(ex), func(t *testing.T) {
			ws := copyWorkspace(t, ex)
			if code, _, stderr := strata(t, "-C", ws, "mod", "vendor"); code != 0 {
				t.Fatalf("mod vendor: exit %d: %s", code, stderr)
			}
			for _, args := range [][]string{{"vet", "-c=false", "."}, {"export", "-e", "images", "."}} {
				cmd := exec.Command(cueBin, args...)
				cmd.Dir = ws
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("cue %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				if args[0] == "export" && !bytes.Contains(out, []byte(`"stages"`)) {
					t.Fatalf("cue export -e images printed no images:\n%s", out)
				}
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	bad := t.TempDir()
	os.MkdirAll(filepath.Join(bad, "cue.mod"), 0o755)
	os.WriteFile(filepath.Join(bad, "cue.mod", "module.cue"), []byte("module: \"example.com/x\"\nlanguage: version: \"v0.17.1\"\n"), 0o644)
	os.WriteFile(filepath.Join(bad, "x.cue"), []byte("package x\nimages: a: version: 1\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"ok", []string{"-C", "../../examples/minimal", "vet"}, exitOK},
		{"bad spec", []string{"-C", bad, "vet"}, exitBadSpec},
		{"bad spec compile", []string{"-C", bad, "compile"}, exitBadSpec},
		{"no workspace", []string{"-C", t.TempDir(), "compile"}, exitBadSpec},
		{"unknown flag", []string{"vet", "--bogus"}, exitBadSpec},
		{"extra argument", []string{"vet", "extra"}, exitBadSpec},
		{"bad output format", []string{"--output", "yaml", "version"}, exitBadSpec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, stderr := strata(t, tc.args...); code != tc.want {
				t.Errorf("strata %v: exit %d, want %d\n%s", tc.args, code, tc.want, stderr)
			}
		})
	}
}

// TestJSONOutputIsOneDocument: with --output json, stdout holds exactly one JSON
// document, for failures too.
func TestJSONOutputIsOneDocument(t *testing.T) {
	for _, args := range [][]string{
		{"--output", "json", "-C", "../../examples/fleet", "vet"},
		{"--output", "json", "-C", "../../examples/fleet", "expand"},
		{"--output", "json", "-C", t.TempDir(), "vet"},
		{"--output", "json", "stages"},
	} {
		_, stdout, _ := strata(t, args...)
		dec := jsonDecoder(stdout)
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Errorf("strata %v: stdout is not JSON: %v\n%s", args, err, stdout)
			continue
		}
		if dec.More() {
			t.Errorf("strata %v: more than one JSON document on stdout", args)
		}
	}
}

func jsonDecoder(s string) *json.Decoder { return json.NewDecoder(strings.NewReader(s)) }
