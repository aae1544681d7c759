package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const cacheSpec = `package w

sources: data: path: "data"

images: base: {
	version: "1.0.0"
	stages: [
		{type: "strata.hostname", options: hostname: "base"},
		{type: "strata.copy", options: input: "d", inputs: d: "sources.data"},
	]
	outputs: [{type: "tar"}]
}
`

func cacheWorkspace(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"cue.mod/module.cue": "module: \"example.com/w\"\nlanguage: version: \"v0.17.1\"\n",
		"w.cue":              cacheSpec,
		"data/motd":          "hello\n",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// compileOnce runs `strata -v compile` and returns the plan and whether it came
// from the compile cache.
func compileOnce(t *testing.T, dir, cache string, extra ...string) ([]byte, bool) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args := append([]string{"-C", dir, "--cache-dir", cache, "-v", "compile"}, extra...)
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("strata %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
	}
	return stdout.Bytes(), strings.Contains(stderr.String(), "compile cache hit")
}

func TestCompileCache(t *testing.T) {
	dir := cacheWorkspace(t)
	cache := t.TempDir()
	cold, hit := compileOnce(t, dir, cache)
	if hit {
		t.Fatal("first compile was a hit")
	}
	warm, hit := compileOnce(t, dir, cache)
	if !hit {
		t.Fatal("unchanged second compile was a miss")
	}
	if !bytes.Equal(cold, warm) {
		t.Fatal("a hit's plan differs from the compiled one")
	}
	fresh, hit := compileOnce(t, dir, cache, "--no-cache")
	if hit || !bytes.Equal(fresh, cold) {
		t.Fatalf("--no-cache: hit=%t, same bytes=%t", hit, bytes.Equal(fresh, cold))
	}
	// -o writes the same bytes from a hit.
	out := filepath.Join(t.TempDir(), "plan.json")
	if _, hit := compileOnce(t, dir, cache, "-o", out); !hit {
		t.Error("compile -o: miss")
	}
	if b, err := os.ReadFile(out); err != nil || !bytes.Equal(b, cold) {
		t.Errorf("compile -o from a hit wrote different bytes (%v)", err)
	}
	// graph decodes a hit.
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-C", dir, "--cache-dir", cache, "graph", "--format", "json"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "images.base.stages[1]") {
		t.Errorf("graph from a hit: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	// The cache is the store's state: gc leaves it, ls counts it.
	stdout.Reset()
	if code := run(context.Background(), []string{"--cache-dir", cache, "cache", "gc", "--max-size", "0"}, &stdout, &stderr); code != 0 {
		t.Fatalf("cache gc: exit %d\n%s", code, stderr.String())
	}
	if _, hit := compileOnce(t, dir, cache); !hit {
		t.Error("cache gc removed the compile cache")
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"--cache-dir", cache, "--output", "json", "cache", "ls"}, &stdout, &stderr); code != 0 {
		t.Fatalf("cache ls: exit %d\n%s", code, stderr.String())
	}
	var ls struct {
		State map[string]int64 `json:"state"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &ls); err != nil || ls.State["compile"] <= 0 {
		t.Errorf("cache ls state = %v, %v; want the compile cache's size", ls.State, err)
	}
}

func TestCompileCacheMisses(t *testing.T) {
	changes := []struct {
		name   string
		change func(t *testing.T, dir string)
	}{
		{"edit .cue", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "w.cue"), strings.Replace(cacheSpec, `hostname: "base"`, `hostname: "base2"`, 1))
		}},
		{"add .json", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "extra.json"), `{"images": {"extra": {"version": "1", "stages": []}}}`)
		}},
		{"path source content", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "data", "motd"), "changed\n")
		}},
		{"strata version", func(t *testing.T, dir string) {
			old := version
			version = "v0.0.0-other"
			t.Cleanup(func() { version = old })
		}},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			dir := cacheWorkspace(t)
			cache := t.TempDir()
			before, _ := compileOnce(t, dir, cache)
			c.change(t, dir)
			after, hit := compileOnce(t, dir, cache)
			if hit {
				t.Fatal("hit after the change")
			}
			fresh, _ := compileOnce(t, dir, cache, "--no-cache")
			if !bytes.Equal(after, fresh) {
				t.Error("plan after the change differs from a compile without the cache")
			}
			if c.name != "strata version" && bytes.Equal(before, after) {
				t.Error("the change did not change the plan")
			}
			if _, hit := compileOnce(t, dir, cache); !hit {
				t.Error("no hit for the changed workspace's second compile")
			}
		})
	}
}

func TestCompileCacheTruncatedEntry(t *testing.T) {
	dir := cacheWorkspace(t)
	cache := t.TempDir()
	cold, _ := compileOnce(t, dir, cache)
	// Kept in the store's state directory, nowhere else in the store.
	entries, err := filepath.Glob(filepath.Join(cache, "state", "compile", "*.json"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("cache entries: %v, %v", entries, err)
	}
	if _, err := os.Stat(filepath.Join(cache, "compile")); !os.IsNotExist(err) {
		t.Fatalf("compile/ in the store: %v", err)
	}
	info, err := os.Stat(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(entries[0], info.Size()/2); err != nil {
		t.Fatal(err)
	}
	got, hit := compileOnce(t, dir, cache)
	if hit {
		t.Fatal("hit on a truncated entry")
	}
	if !bytes.Equal(got, cold) {
		t.Error("plan compiled after a truncated entry differs")
	}
	if again, err := os.Stat(entries[0]); err != nil || again.Size() != info.Size() {
		t.Fatalf("entry not rebuilt: %v", err)
	}
	if warm, hit := compileOnce(t, dir, cache); !hit || !bytes.Equal(warm, cold) {
		t.Errorf("after rebuilding: hit=%t, same bytes=%t", hit, bytes.Equal(warm, cold))
	}
}

func TestStoreDir(t *testing.T) {
	t.Setenv("STRATA_CACHE_DIR", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	g := &globals{}
	if got := g.storeDir(); got != "/xdg/strata" {
		t.Errorf("XDG: %s", got)
	}
	t.Setenv("STRATA_CACHE_DIR", "/env")
	if got := g.storeDir(); got != "/env" {
		t.Errorf("STRATA_CACHE_DIR: %s", got)
	}
	g.cacheDir = "/flag"
	if got := g.storeDir(); got != "/flag" {
		t.Errorf("--cache-dir: %s", got)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCacheCommandsNeedAStore: cache ls, gc and verify on a store that is not
// there are a usage error naming it, and make none: verify made an empty store
// and said "store is clean" for a mistyped --cache-dir.
func TestCacheCommandsNeedAStore(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-store")
	for _, cmd := range []string{"ls", "gc", "verify"} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"--cache-dir", missing, "cache", cmd}, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), "no store at "+missing) {
			t.Errorf("cache %s: exit %d\n%s", cmd, code, stderr.String())
		}
		if _, err := os.Stat(missing); err == nil {
			t.Fatalf("cache %s made a store", cmd)
		}
	}
}
