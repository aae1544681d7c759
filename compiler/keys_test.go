package compiler_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/lang"
)

var testHost = plan.Host{OS: "testos", OSVersion: "1", Arch: "amd64", StrataVersion: "test"}

const moduleCUE = "module: \"example.com/keys\"\nlanguage: version: \"v0.17.1\"\n"

// baseSpec has a chain of three stages (a), an image built from a (b), an image
// that ships a at run time (c), a path source mounted into a stage, and a hook.
const baseSpec = `package keys

sources: files: path: "files"

images: a: {
	version: "1"
	stages: [
		{type: "strata.hostname", options: hostname: "a"},
		{type: "strata.files", options: files: "/etc/motd": content: "hello"},
		{type: "strata.copy", options: input: "f", inputs: f: "sources.files"},
	]
	outputs: [{type: "tar"}]
	hooks: ["check"]
}
images: b: {
	version: "1"
	from: "images.a"
	stages: [{type: "strata.hostname", options: hostname: "b"}]
}
images: c: {
	version: "1"
	stages: [{type: "strata.hostname", options: hostname: "c"}]
}
hooks: check: {on: "post-build", command: ["/bin/true"]}
`

// reformatted is baseSpec with fields reordered, whitespace changed, comments
// added and the same values written another way.
const reformatted = `package keys

// Comments never enter a key.
hooks: check: {command: ["/bin/true"], on: "post-build"}

images: c: {stages: [{options: {hostname: "c"}, type: "strata.hostname"}], version: "1"}

images: b: {
	stages: [{options: hostname: "b", type: "strata.hostname"}]
	from:    "images.a" // build dependency
	version: "1"
}

images: a: {
	hooks: ["check"]
	outputs: [{type: "tar"}]
	stages: [
		{options: hostname: "a", type: "strata.hostname"},
		{type: "strata.files", options: files: "/etc/motd": {content: "hello", mode: 0o644}},
		{inputs: f: "sources.files", options: input: "f", type: "strata.copy"},
	]
	version: "1"
}

sources: files: path: "files"
`

func writeWorkspace(t *testing.T, dir, spec string) string {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, "cue.mod"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "files"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "cue.mod", "module.cue"), []byte(moduleCUE), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "files", "greeting"), []byte("hi\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "keys.cue"), []byte(spec), 0o644))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func compile(t *testing.T, dir string) *plan.Plan {
	t.Helper()
	ws, err := lang.Load(context.Background(), dir)
	if err != nil {
		t.Fatalf("load %s:\n%v", dir, err)
	}
	p, err := compiler.Compile(context.Background(), ws, compiler.Options{Host: testHost})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return p
}

func encode(t *testing.T, p *plan.Plan) []byte {
	t.Helper()
	var buf bytes.Buffer
	must(t, p.Encode(&buf))
	return buf.Bytes()
}

// keys maps node names to their strong and weak keys.
func keys(p *plan.Plan) (strong, weak map[string]string) {
	strong, weak = map[string]string{}, map[string]string{}
	for _, n := range p.Nodes {
		strong[n.Name], weak[n.Name] = n.ID, n.WeakKey
	}
	return strong, weak
}

func TestReformatReorderCommentsChangeNoKey(t *testing.T) {
	s1, w1 := keys(compile(t, writeWorkspace(t, t.TempDir(), baseSpec)))
	s2, w2 := keys(compile(t, writeWorkspace(t, t.TempDir(), reformatted)))
	if d := cmp.Diff(s1, s2); d != "" {
		t.Errorf("strong keys changed (-base +reformatted):\n%s", d)
	}
	if d := cmp.Diff(w1, w2); d != "" {
		t.Errorf("weak keys changed (-base +reformatted):\n%s", d)
	}
}

func TestPlanIndependentOfLocationAndDeterministic(t *testing.T) {
	root := t.TempDir()
	b1 := encode(t, compile(t, writeWorkspace(t, filepath.Join(root, "one"), baseSpec)))
	b2 := encode(t, compile(t, writeWorkspace(t, filepath.Join(root, "elsewhere", "two"), baseSpec)))
	if !bytes.Equal(b1, b2) {
		t.Fatalf("plans differ between locations:\n%s", cmp.Diff(string(b1), string(b2)))
	}
	again := encode(t, compile(t, filepath.Join(root, "one")))
	if !bytes.Equal(b1, again) {
		t.Fatal("two compiles of one workspace differ")
	}
	if strings.Contains(string(b1), root) {
		t.Fatal("plan contains the workspace's host path")
	}
	golden := filepath.Join("testdata", "keys.plan.golden.json")
	if os.Getenv("STRATA_UPDATE") != "" {
		must(t, os.WriteFile(golden, b1, 0o644))
	}
	want, err := os.ReadFile(golden)
	must(t, err)
	if !bytes.Equal(b1, want) {
		t.Fatalf("plan differs from %s (STRATA_UPDATE=1 refreshes it):\n%s", golden, cmp.Diff(string(want), string(b1)))
	}
}

func TestPlanRoundTrip(t *testing.T) {
	b := encode(t, compile(t, writeWorkspace(t, t.TempDir(), baseSpec)))
	p, err := plan.Decode(bytes.NewReader(b))
	must(t, err)
	if again := encode(t, p); !bytes.Equal(b, again) {
		t.Fatalf("encode(decode(plan)) differs:\n%s", cmp.Diff(string(b), string(again)))
	}
}

func TestOptionChangeInvalidatesDownstreamOnly(t *testing.T) {
	s1, w1 := keys(compile(t, writeWorkspace(t, t.TempDir(), baseSpec)))
	changed := strings.Replace(baseSpec, `content: "hello"`, `content: "changed"`, 1)
	s2, w2 := keys(compile(t, writeWorkspace(t, t.TempDir(), changed)))

	const edited = "images.a.stages[1]"
	downstream := []string{"images.a.stages[2]", "images.a.outputs[0]", "hooks.check", "images.b.stages[0]", "images.b.outputs[0]"}
	upstream := []string{"images.a.stages[0]", "sources.files"}
	unrelated := []string{"images.c.stages[0]", "images.c.outputs[0]"}

	if s1[edited] == s2[edited] || w1[edited] == w2[edited] {
		t.Errorf("%s: strong and weak keys must change with its own options", edited)
	}
	for _, n := range downstream {
		if s1[n] == "" {
			t.Fatalf("no node %s in plan", n)
		}
		if s1[n] == s2[n] {
			t.Errorf("%s: strong key must change when an upstream option changes", n)
		}
		if w1[n] != w2[n] {
			t.Errorf("%s: weak key must not change when only an upstream option changes", n)
		}
	}
	for _, n := range append(upstream, unrelated...) {
		if s1[n] != s2[n] || w1[n] != w2[n] {
			t.Errorf("%s: keys must not change", n)
		}
	}
}

func TestRuntimeDependencyChangesNoKey(t *testing.T) {
	s1, w1 := keys(compile(t, writeWorkspace(t, t.TempDir(), baseSpec)))
	withRuntime := strings.Replace(baseSpec, "images: c: {\n", "images: c: {\n\truntime: [\"images.b\"]\n", 1)
	p2 := compile(t, writeWorkspace(t, t.TempDir(), withRuntime))
	s2, w2 := keys(p2)
	if d := cmp.Diff(s1, s2); d != "" {
		t.Errorf("a run-time dependency changed strong keys:\n%s", d)
	}
	if d := cmp.Diff(w1, w2); d != "" {
		t.Errorf("a run-time dependency changed weak keys:\n%s", d)
	}
	if got := p2.Images["c"].Runtime; !cmp.Equal(got, []string{"images.b"}) {
		t.Errorf("runtime not recorded in the plan's images: %v", got)
	}
}

func TestPathSourceContentIsKeyed(t *testing.T) {
	dir := writeWorkspace(t, t.TempDir(), baseSpec)
	s1, _ := keys(compile(t, dir))
	must(t, os.WriteFile(filepath.Join(dir, "files", "greeting"), []byte("hello\n"), 0o644))
	s2, _ := keys(compile(t, dir))
	for _, n := range []string{"sources.files", "images.a.stages[2]"} {
		if s1[n] == s2[n] {
			t.Errorf("%s: key must change when the source's content changes", n)
		}
	}
	if s1["images.a.stages[1]"] != s2["images.a.stages[1]"] {
		t.Error("a stage that does not use the source changed key")
	}
}

func TestHostFingerprintKeysHostBuildRoots(t *testing.T) {
	ws, err := lang.Load(context.Background(), writeWorkspace(t, t.TempDir(), baseSpec))
	must(t, err)
	p1, err := compiler.Compile(context.Background(), ws, compiler.Options{Host: testHost})
	must(t, err)
	other := testHost
	other.OSVersion = "2"
	p2, err := compiler.Compile(context.Background(), ws, compiler.Options{Host: other})
	must(t, err)
	s1, _ := keys(p1)
	s2, _ := keys(p2)
	if s1["images.a.stages[0]"] == s2["images.a.stages[0]"] {
		t.Error("a host build root must be keyed by the host fingerprint")
	}
	if s1["sources.files"] != s2["sources.files"] {
		t.Error("a source does not depend on the host")
	}
}

func TestPlanOrderAndOrigins(t *testing.T) {
	p := compile(t, writeWorkspace(t, t.TempDir(), baseSpec))
	seen := map[string]bool{}
	for _, n := range p.Nodes {
		for _, d := range n.Deps {
			if !seen[d] {
				t.Errorf("%s comes before its dependency %s", n.Name, d)
			}
		}
		seen[n.ID] = true
		if !strings.HasPrefix(n.Origin, "keys.cue:") {
			t.Errorf("%s: origin %q does not point into the user's file", n.Name, n.Origin)
		}
	}
	n, ok := p.Node("images.a.stages[1]")
	if !ok || n.Origin != "keys.cue:9:3" {
		t.Errorf("origin of images.a.stages[1] = %q, want keys.cue:9:3", n.Origin)
	}
}

// TestIdenticalWorkIsOneNode: two images that start with the same stage share one
// node (content addressing); the second name resolves to it as an alias, and the
// plan still decodes.
func TestIdenticalWorkIsOneNode(t *testing.T) {
	spec := `package keys

images: one: {version: "1", stages: [{type: "strata.hostname", options: hostname: "same"}, {type: "strata.files", options: files: "/a": {}}]}
images: two: {version: "1", stages: [{type: "strata.hostname", options: hostname: "same"}, {type: "strata.files", options: files: "/b": {}}]}
`
	p := compile(t, writeWorkspace(t, t.TempDir(), spec))
	one, ok1 := p.Node("images.one.stages[0]")
	two, ok2 := p.Node("images.two.stages[0]")
	if !ok1 || !ok2 || one != two {
		t.Fatalf("identical stages are not one node: %v %v", one, two)
	}
	if len(one.Aliases) != 1 || one.Aliases[0].Name != "images.two.stages[0]" || one.Aliases[0].Origin != "keys.cue:4:38" {
		t.Fatalf("aliases = %+v", one.Aliases)
	}
	b := encode(t, p)
	back, err := plan.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("a plan with shared nodes must decode: %v", err)
	}
	if n, _ := back.Node("images.two.stages[1]"); n == nil || n.Inputs.Tree != one.ID {
		t.Fatal("the second image's next stage must build on the shared node")
	}
}

// TestOCIVersionAndAnnotationsAreKeyed: an image's version and annotations
// change its oci output (reference name, annotations), so they enter that
// output's key and nothing else's; format options enter their output's key.
func TestOCIVersionAndAnnotationsAreKeyed(t *testing.T) {
	spec := strings.Replace(baseSpec, `outputs: [{type: "tar"}]`,
		`outputs: [{type: "tar"}, {type: "oci", config: cmd: ["/bin/sh"]}, {type: "ext4", label: "root"}]`, 1)
	s0, _ := keys(compile(t, writeWorkspace(t, t.TempDir(), spec)))
	for _, tc := range []struct {
		name, from, to string
		changed        []string
	}{
		{"version", `images: a: {
	version: "1"`, `images: a: {
	version: "2"`, []string{"images.a.outputs[1]"}},
		{"annotations", `hooks: ["check"]`, `hooks: ["check"]
	annotations: "org.example.team": "os"`, []string{"images.a.outputs[1]"}},
		{"config", `cmd: ["/bin/sh"]`, `cmd: ["/bin/bash"]`, []string{"images.a.outputs[1]"}},
		{"label", `label: "root"`, `label: "root-b"`, []string{"images.a.outputs[2]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			changed := strings.Replace(spec, tc.from, tc.to, 1)
			if changed == spec {
				t.Fatalf("the edit %q does not apply", tc.from)
			}
			s1, _ := keys(compile(t, writeWorkspace(t, t.TempDir(), changed)))
			// Post-build hooks see the outputs, so they follow any output's key.
			tc.changed = append(tc.changed, "hooks.check")
			for n := range s0 {
				if want := slices.Contains(tc.changed, n); (s0[n] != s1[n]) != want {
					t.Errorf("%s: key changed = %v, want %v", n, s0[n] != s1[n], want)
				}
			}
		})
	}
}
