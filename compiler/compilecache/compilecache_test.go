package compilecache_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/strata-build/strata/compiler/compilecache"
	"github.com/strata-build/strata/compiler/plan"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func workspace(t *testing.T) string {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"cue.mod/module.cue":                         "module: \"example.com/w\"\nlanguage: version: \"v0.17.1\"\n",
		"cue.mod/pkg/strata.build/strata/schema.cue": "// vendored copy\n",
		"a.cue":       "package w\n",
		"lib/lib.cue": "package lib\nx: 1\n",
		"data/file":   "hello\n",
		"README.md":   "not an input\n",
	})
	return dir
}

var inputs = compilecache.Inputs{StrataVersion: "v1", Host: plan.Host{OS: "debian", Arch: "amd64"}, Schema: []byte("schema")}

func key(t *testing.T, dir string, in compilecache.Inputs) string {
	t.Helper()
	k, err := compilecache.Key(dir, in)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKey(t *testing.T) {
	dir := workspace(t)
	base := key(t, dir, inputs)
	if again := key(t, dir, inputs); again != base {
		t.Fatalf("key not stable: %s then %s", base, again)
	}
	changes := []struct {
		name   string
		change func(t *testing.T, dir string, in *compilecache.Inputs)
		same   bool
	}{
		{"edit .cue", func(t *testing.T, dir string, _ *compilecache.Inputs) {
			writeFiles(t, dir, map[string]string{"a.cue": "package w\nx: 1\n"})
		}, false},
		{"add .json", func(t *testing.T, dir string, _ *compilecache.Inputs) {
			writeFiles(t, dir, map[string]string{"extra.json": "{}"})
		}, false},
		{"add .yaml", func(t *testing.T, dir string, _ *compilecache.Inputs) {
			writeFiles(t, dir, map[string]string{"extra.yaml": "a: 1\n"})
		}, false},
		{"edit module.cue", func(t *testing.T, dir string, _ *compilecache.Inputs) {
			writeFiles(t, dir, map[string]string{"cue.mod/module.cue": "module: \"example.com/x\"\n"})
		}, false},
		{"add cue.mod/usr file", func(t *testing.T, dir string, _ *compilecache.Inputs) {
			writeFiles(t, dir, map[string]string{"cue.mod/usr/x/x.cue": "package x\n"})
		}, false},
		{"strata version", func(_ *testing.T, _ string, in *compilecache.Inputs) { in.StrataVersion = "v2" }, false},
		{"binary", func(_ *testing.T, _ string, in *compilecache.Inputs) { in.Binary = "other" }, false},
		{"host", func(_ *testing.T, _ string, in *compilecache.Inputs) { in.Host.OSVersion = "13" }, false},
		{"schema", func(_ *testing.T, _ string, in *compilecache.Inputs) { in.Schema = []byte("schema2") }, false},
		{"env", func(_ *testing.T, _ string, in *compilecache.Inputs) { in.Env = []string{"CUE_EXPERIMENT=x"} }, false},
		{"records", func(_ *testing.T, _ string, in *compilecache.Inputs) {
			in.Records = map[string][]byte{"probe": []byte(`{"name":"a"}` + "\n")}
		}, false},
		{"a job with no records beside one with", func(_ *testing.T, _ string, in *compilecache.Inputs) {
			in.Records = map[string][]byte{"probe": []byte(`{"name":"a"}`), "other": nil}
		}, false},
		{"no records", func(_ *testing.T, _ string, in *compilecache.Inputs) { in.Records = map[string][]byte{} }, true},
		{"vendored schema", func(t *testing.T, dir string, _ *compilecache.Inputs) {
			writeFiles(t, dir, map[string]string{"cue.mod/pkg/strata.build/strata/schema.cue": "// other\n"})
		}, true},
		{"non-input file", func(t *testing.T, dir string, _ *compilecache.Inputs) {
			writeFiles(t, dir, map[string]string{"README.md": "changed\n", "data/file": "changed\n"})
		}, true},
		// A package of the workspace's module the spec may import.
		{"edit an importable package", func(t *testing.T, dir string, _ *compilecache.Inputs) {
			writeFiles(t, dir, map[string]string{"lib/lib.cue": "package lib\nx: 2\n"})
		}, false},
		{"cue file under out/ or a dot-directory", func(t *testing.T, dir string, _ *compilecache.Inputs) {
			writeFiles(t, dir, map[string]string{"out/img/x.cue": "package x\n", ".git/x.cue": "package x\n", "lib/.hidden/x.cue": "package x\n"})
		}, true},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			dir := workspace(t)
			in := inputs
			c.change(t, dir, &in)
			if got := key(t, dir, in); (got == base) != c.same {
				t.Errorf("key changed = %t, want %t", got != base, !c.same)
			}
		})
	}
	t.Run("not a workspace", func(t *testing.T) {
		if _, err := compilecache.Key(t.TempDir(), inputs); err == nil {
			t.Error("no error for a directory without cue.mod/module.cue")
		}
	})
}

const planBytes = "{\n  \"version\": 1\n}\n"

func TestPutGet(t *testing.T) {
	ctx := context.Background()
	dir := workspace(t)
	c := compilecache.New(t.TempDir())
	k := key(t, dir, inputs)
	if _, ok := c.Get(ctx, k, dir); ok {
		t.Fatal("hit in an empty cache")
	}
	if err := c.Put(k, &compilecache.Entry{Plan: []byte(planBytes), Nodes: 3}); err != nil {
		t.Fatal(err)
	}
	e, ok := c.Get(ctx, k, dir)
	if !ok {
		t.Fatal("miss after Put")
	}
	if string(e.Plan) != planBytes || e.Nodes != 3 {
		t.Errorf("got %q (%d nodes), want %q (3 nodes)", e.Plan, e.Nodes, planBytes)
	}
	h, ok := c.Open(ctx, k, dir)
	if !ok {
		t.Fatal("Open: miss after Put")
	}
	defer h.Close()
	var buf bytes.Buffer
	if _, err := h.WriteTo(&buf); err != nil || buf.String() != planBytes {
		t.Errorf("WriteTo: %q, %v", buf.String(), err)
	}
	// Through a file, where the kernel copies.
	f, err := os.Create(filepath.Join(t.TempDir(), "plan.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if b, _ := os.ReadFile(f.Name()); string(b) != planBytes {
		t.Errorf("WriteTo file: %q", b)
	}
}

// TestPendingKept: an entry keeps the plan's pending templates and its images
// that build in the host's /usr, so a hit says which templates wait on which
// job, and warns, without decoding the plan.
func TestPendingKept(t *testing.T) {
	ctx := context.Background()
	dir := workspace(t)
	c := compilecache.New(t.TempDir())
	k := key(t, dir, inputs)
	pending := []plan.Pending{{Template: "t", Resource: "r", Job: "jobs.probe", Node: "n", Origin: "a.cue:1:1"}}
	hostRoot := compilecache.HostRoot{Images: []string{"images.a", "images.b"}, Count: 2, Origin: "a.cue:3:9"}
	if err := c.Put(k, &compilecache.Entry{Plan: []byte(planBytes), Nodes: 3, Pending: pending, HostRoot: hostRoot}); err != nil {
		t.Fatal(err)
	}
	h, ok := c.Open(ctx, k, dir)
	if !ok {
		t.Fatal("miss after Put")
	}
	defer h.Close()
	if len(h.Pending) != 1 || h.Pending[0] != pending[0] {
		t.Errorf("pending %+v, want %+v", h.Pending, pending)
	}
	if !reflect.DeepEqual(h.HostRoot, hostRoot) {
		t.Errorf("host root %+v, want %+v", h.HostRoot, hostRoot)
	}
}

func TestPathSource(t *testing.T) {
	ctx := context.Background()
	dir := workspace(t)
	c := compilecache.New(t.TempDir())
	k := key(t, dir, inputs)
	p := &plan.Plan{Nodes: []*plan.Node{{Kind: plan.KindSource, Name: "sources.data", Source: &plan.Source{Path: "data"}}}}
	paths := compilecache.PathSources(p)
	if len(paths) != 1 || paths[0].Path != "data" {
		t.Fatalf("PathSources = %v", paths)
	}
	// The digest the compiler computes for the current content.
	if err := c.Put(k, &compilecache.Entry{Plan: []byte(planBytes), Paths: paths}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(ctx, k, dir); ok {
		t.Fatal("hit although the recorded digest is wrong")
	}
	d := digest(t, dir, "data")
	paths[0].Digest = d
	if err := c.Put(k, &compilecache.Entry{Plan: []byte(planBytes), Paths: paths}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(ctx, k, dir); !ok {
		t.Fatal("miss with unchanged path source")
	}
	writeFiles(t, dir, map[string]string{"data/file": "changed\n"})
	if _, ok := c.Get(ctx, k, dir); ok {
		t.Fatal("hit after the path source's content changed")
	}
	writeFiles(t, dir, map[string]string{"data/file": "hello\n"})
	if _, ok := c.Get(ctx, k, dir); !ok {
		t.Fatal("miss after the path source's content was restored")
	}
	if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(ctx, k, dir); ok {
		t.Fatal("hit after the path source was removed")
	}
}

func TestDamagedEntry(t *testing.T) {
	ctx := context.Background()
	dir := workspace(t)
	damage := map[string]func(b []byte) []byte{
		"truncated":        func(b []byte) []byte { return b[:len(b)-5] },
		"truncated header": func(b []byte) []byte { return b[:10] },
		"empty":            func([]byte) []byte { return nil },
		"garbage":          func(b []byte) []byte { return bytes.Repeat([]byte("x"), len(b)) },
		"flipped byte": func(b []byte) []byte {
			b = bytes.Clone(b)
			b[len(b)-6] ^= 1
			return b
		},
	}
	for name, f := range damage {
		t.Run(name, func(t *testing.T) {
			c := compilecache.New(t.TempDir())
			k := key(t, dir, inputs)
			if err := c.Put(k, &compilecache.Entry{Plan: []byte(planBytes)}); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(c.Dir(), k+".json")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, f(b), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, ok := c.Get(ctx, k, dir); ok {
				t.Fatal("hit on a damaged entry")
			}
			if _, err := os.Stat(p); err == nil {
				t.Error("damaged entry not removed")
			}
		})
	}
}

func digest(t *testing.T, dir, rel string) string {
	t.Helper()
	d, err := plan.PathDigest(context.Background(), dir, rel)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCompileThroughCache: Compile compiles once and serves the unchanged
// workspace from the cache after, with the stored bytes; a nil cache always
// compiles; a failing compile is not stored.
func TestCompileThroughCache(t *testing.T) {
	ctx := context.Background()
	dir := workspace(t)
	c := compilecache.New(t.TempDir())
	calls := 0
	compile := func(context.Context) (*plan.Plan, error) {
		calls++
		return &plan.Plan{Version: plan.Version, Nodes: []*plan.Node{{ID: "a", Kind: plan.KindSource, Name: "sources.<a&b>",
			Options: json.RawMessage(`{"x":[1,{"y":"z"}],"e":{}}`)}}}, nil
	}
	first, err := compilecache.Compile(ctx, c, dir, compilecache.Inputs{StrataVersion: "t"}, compile, nil)
	if err != nil || first.Plan == nil || calls != 1 {
		t.Fatalf("first: %+v %v, %d compiles", first, err, calls)
	}
	second, err := compilecache.Compile(ctx, c, dir, compilecache.Inputs{StrataVersion: "t"}, compile, nil)
	if err != nil || second.Hit == nil || calls != 1 {
		t.Fatalf("second: %+v %v, %d compiles", second, err, calls)
	}
	defer second.Close()
	// strata compile writes, for a miss and a hit alike, exactly what
	// Plan.Encode writes, though neither keeps those bytes.
	var want, miss, hit bytes.Buffer
	if err := first.Plan.Encode(&want); err != nil {
		t.Fatal(err)
	}
	if _, err := first.WriteTo(&miss); err != nil || !bytes.Equal(miss.Bytes(), want.Bytes()) {
		t.Fatalf("the compile's bytes differ from Plan.Encode's (%v):\n%s\nwant:\n%s", err, miss.Bytes(), want.Bytes())
	}
	if _, err := second.WriteTo(&hit); err != nil || !bytes.Equal(hit.Bytes(), want.Bytes()) {
		t.Fatalf("the hit's bytes differ from Plan.Encode's: %v", err)
	}
	if p, err := second.Decoded(ctx, compile, nil); err != nil || len(p.Nodes) != 1 || calls != 1 {
		t.Fatalf("decoded hit: %v, %d compiles", err, calls)
	}
	if _, err := compilecache.Compile(ctx, nil, dir, compilecache.Inputs{StrataVersion: "t"}, compile, nil); err != nil || calls != 2 {
		t.Fatalf("nil cache: %v, %d compiles", err, calls)
	}
}

// TestEditDuringCompileNotStored: a plan compiled while an input file
// changed is not filed under the key of either content, so a later compile
// of the first content cannot hit a plan of the second.
func TestEditDuringCompileNotStored(t *testing.T) {
	ctx := context.Background()
	dir := workspace(t)
	c := compilecache.New(filepath.Join(t.TempDir(), "cache"))
	calls := 0
	edit := func(context.Context) (*plan.Plan, error) {
		calls++
		if calls == 1 { // the compiler reads the edited file, not what Key hashed
			writeFiles(t, dir, map[string]string{"a.cue": "package w\nx: 2\n"})
		}
		return &plan.Plan{Version: plan.Version, Nodes: []*plan.Node{{ID: "a", Kind: plan.KindSource}}}, nil
	}
	in := compilecache.Inputs{StrataVersion: "t"}
	if _, err := compilecache.Compile(ctx, c, dir, in, edit, nil); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"a.cue": "package w\n"}) // the first content again
	second, err := compilecache.Compile(ctx, c, dir, in, edit, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if second.Hit != nil || calls != 2 {
		t.Fatalf("a plan compiled during an edit was stored and hit (%d compiles)", calls)
	}
}

// TestKeyEmbeds: the files a .cue file embeds (@embed(file=...) and
// @embed(glob=...), relative to that file) are keyed; other data files are
// not. Found in review: an embedded JSON file edited, and the build answered
// from the cache with the old content.
func TestKeyEmbeds(t *testing.T) {
	dir := workspace(t)
	writeFiles(t, dir, map[string]string{
		"a.cue":            "@extern(embed)\n\npackage w\n\n_d: _ @embed(file=\"sub/data.json\")\n// a comment: @embed(file=gone.json)\n_g: _ @embed(glob=conf/*.yaml, type=yaml)\n",
		"lib/e.cue":        "@extern(embed)\n\npackage lib\n\ny: _ @embed(file=inner.json)\n",
		"sub/data.json":    `{"x":"one"}`,
		"conf/a.yaml":      "a: 1\n",
		"conf/deep/b.yaml": "b: 1\n",
		"lib/inner.json":   `{}`,
	})
	base := key(t, dir, inputs)
	for _, c := range []struct {
		name  string
		files map[string]string
		same  bool
	}{
		{"embedded file edited", map[string]string{"sub/data.json": `{"x":"two"}`}, false},
		{"file embedded from a package edited", map[string]string{"lib/inner.json": `{"y":1}`}, false},
		{"file a glob embeds edited", map[string]string{"conf/a.yaml": "a: 2\n"}, false},
		{"file a glob embeds added", map[string]string{"conf/c.yaml": "c: 1\n"}, false},
		{"file the glob does not match", map[string]string{"conf/deep/b.yaml": "b: 2\n", "conf/x.json": "{}"}, true},
		{"file named in a comment created", map[string]string{"gone.json": "{}"}, false},
		{"other data file", map[string]string{"sub/other.json": "{}"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			writeFiles(t, dir, c.files)
			got := key(t, dir, inputs)
			if (got == base) != c.same {
				t.Errorf("key changed = %t, want %t", got != base, !c.same)
			}
			base = got
		})
	}
}

// TestKeyFollowsLinkedDirectories: a package directory or a vendored module
// that is a link to a directory is read by the CUE loader, so an edit behind
// it changes the key; a link loop is walked once.
func TestKeyFollowsLinkedDirectories(t *testing.T) {
	dir := workspace(t)
	shared := t.TempDir()
	writeFiles(t, shared, map[string]string{
		"lib/lib.cue": "package lib\n\nmotd: \"v1\"\n",
		"ext/ext.cue": "package ext\n\nx: 1\n",
	})
	for _, err := range []error{
		os.Symlink(filepath.Join(shared, "lib"), filepath.Join(dir, "linked")),
		os.MkdirAll(filepath.Join(dir, "cue.mod", "pkg", "example.com"), 0o755),
		os.Symlink(filepath.Join(shared, "ext"), filepath.Join(dir, "cue.mod", "pkg", "example.com", "ext")),
		os.Symlink("..", filepath.Join(shared, "lib", "loop")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	base := key(t, dir, inputs)
	for name, files := range map[string]map[string]string{
		"package behind a link edited": {"lib/lib.cue": "package lib\n\nmotd: \"v2\"\n"},
		"module behind a link edited":  {"ext/ext.cue": "package ext\n\nx: 2\n"},
	} {
		writeFiles(t, shared, files)
		got := key(t, dir, inputs)
		if got == base {
			t.Errorf("%s: key unchanged", name)
		}
		base = got
	}
}
