package compiler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/lang"
)

// verifySpec has every node kind that carries a key: a path source mounted
// into a stage, stages on the host root and on another image's tree, outputs,
// a job and a hook.
const verifySpec = `package keys

sources: files: path: "files"

images: a: {
	version: "1"
	stages: [
		{type: "strata.hostname", options: hostname: "a"},
		{type: "strata.run", options: command: ["/bin/true"]},
		{type: "strata.copy", options: input: "f", inputs: f: "sources.files"},
	]
	outputs: [{type: "tar"}]
	hooks: ["check"]
}
images: b: {
	version: "1"
	buildroot: "images.a"
	stages: [{type: "strata.run", options: command: ["/bin/true"]}]
}
jobs: probe: {image: "images.b", command: ["/bin/true"]}
hooks: check: {on: "post-build", command: ["/bin/true"]}
`

// roundTrip decodes the encoded plan after edit changed its JSON form.
func roundTrip(t *testing.T, p *plan.Plan, edit func(doc map[string]any)) (*plan.Plan, error) {
	t.Helper()
	var doc map[string]any
	must(t, json.Unmarshal(encode(t, p), &doc))
	edit(doc)
	b, err := json.Marshal(doc)
	must(t, err)
	return plan.Decode(bytes.NewReader(b))
}

func nodeNamed(doc map[string]any, name string) map[string]any {
	for _, n := range doc["nodes"].([]any) {
		if n := n.(map[string]any); n["name"] == name {
			return n
		}
	}
	panic("no node " + name)
}

// TestSecurityRow31TamperedPlan: a plan file is untrusted. A node edited while
// its id is kept, an edge removed, a node duplicated, an unknown kind or type,
// a build root or mount of a host path, or a name that leaves the out
// directory is refused by Verify (exit 2 in the CLI), naming the node, before
// anything runs; the honest plan passes.
func TestSecurityRow31TamperedPlan(t *testing.T) {
	p := compile(t, writeWorkspace(t, t.TempDir(), verifySpec))
	host := plan.VerifyOptions{Host: testHost}
	if _, err := plan.Verify(p, host); err != nil {
		t.Fatalf("honest plan refused: %v", err)
	}
	set := func(name, field string, v any) func(map[string]any) {
		return func(doc map[string]any) { nodeNamed(doc, name)[field] = v }
	}
	cases := []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"options", set("images.a.stages[0]", "options", map[string]any{"hostname": "evil"}), "images.a.stages[0] (keys.cue:8:3): its id is not the key of its content"},
		{"type", set("images.a.stages[0]", "type", "strata.files"), "images.a.stages[0]"},
		{"command", set("jobs.probe", "command", []any{"/bin/sh", "-c", "evil"}), "jobs.probe (keys.cue:"},
		{"network", set("images.a.stages[1]", "network", true), "images.a.stages[1] (keys.cue:9:3): its id is not the key"},
		{"env", set("images.a.stages[1]", "env", map[string]any{"SOURCE_DATE_EPOCH": "0", "LD_PRELOAD": "/x"}), "images.a.stages[1]"},
		{"source digest", func(doc map[string]any) {
			nodeNamed(doc, "sources.files")["source"].(map[string]any)["digest"] = "sha256:" + strings.Repeat("0", 64)
		}, "sources.files (keys.cue:"},
		{"module digest", set("images.a.stages[0]", "module_digest", strings.Repeat("a", 64)), "another ABI"},
		{"edge removed", set("images.a.stages[2]", "deps", []any{nodeNamed(toDoc(t, p), "images.a.stages[1]")["id"]}), "input f"},
		{"unknown kind", set("images.a.stages[0]", "kind", "exec"), `unknown kind "exec"`},
		{"unknown type", set("images.a.stages[0]", "type", "acme.evil"), `unknown stage type "acme.evil"`},
		{"build root /", func(doc map[string]any) {
			nodeNamed(doc, "images.b.stages[0]")["inputs"].(map[string]any)["buildroot"] = "/"
		}, "build root / is not among its dependencies"},
		{"mount /etc", func(doc map[string]any) {
			nodeNamed(doc, "images.a.stages[2]")["inputs"].(map[string]any)["mounts"] = map[string]any{"f": "/etc"}
		}, "input f /etc is not among its dependencies"},
		{"mount /root", func(doc map[string]any) {
			n := nodeNamed(doc, "images.a.stages[2]")
			n["inputs"].(map[string]any)["mounts"] = map[string]any{"f": "/root"}
			n["deps"] = append(n["deps"].([]any), "/root")
		}, "depends on /root, which does not come before it"},
		{"output name", func(doc map[string]any) {
			nodeNamed(doc, "images.a.outputs[0]")["artifact"] = "../../../../tmp/victim/evil.tar"
		}, `output name "../../../../tmp/victim/evil.tar" is not a plain name`},
		{"image name", func(doc map[string]any) {
			imgs := doc["images"].(map[string]any)
			img := imgs["b"].(map[string]any)
			img["name"] = "../../victim/img"
			imgs["../../victim/img"] = img
			delete(imgs, "b")
		}, `image ../../victim/img: invalid name "../../victim/img": a name must not hold a ".." segment`},
		{"nested image name", func(doc map[string]any) {
			imgs := doc["images"].(map[string]any)
			img := imgs["b"].(map[string]any)
			img["name"] = "a/b"
			imgs["a/b"] = img
			delete(imgs, "b")
		}, `image a/b: its name extends image a's`},
		{"path source", func(doc map[string]any) {
			nodeNamed(doc, "sources.files")["source"].(map[string]any)["path"] = "../../../../etc"
		}, `path "../../../../etc" must be relative, inside the workspace`},
		{"control characters", set("images.a.stages[0]", "origin", "keys.cue:1:1\x1b[2J"), "origin has control characters"},
		// Limits are policy, outside the key, but must not overflow a duration.
		{"timeout overflow", set("images.a.stages[0]", "limits", map[string]any{"timeout_seconds": int64(1) << 62}), "out of range"},
		{"negative memory", set("images.a.stages[0]", "limits", map[string]any{"memory": -1}), "out of range"},
		{"unknown floor", set("images.a.stages[0]", "limits", map[string]any{"memory": 1, "at_least_default": []any{"cpu"}}), `at_least_default names "cpu"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad, err := roundTrip(t, p, tc.edit)
			if err == nil {
				_, err = plan.Verify(bad, host)
			}
			if !errors.Is(err, plan.ErrInvalid) {
				t.Fatalf("want ErrInvalid, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
	t.Run("duplicated node", func(t *testing.T) {
		_, err := roundTrip(t, p, func(doc map[string]any) {
			doc["nodes"] = append(doc["nodes"].([]any), doc["nodes"].([]any)[0])
		})
		if !errors.Is(err, plan.ErrInvalid) || !strings.Contains(err.Error(), "appears twice") {
			t.Fatalf("got %v", err)
		}
	})
}

func toDoc(t *testing.T, p *plan.Plan) map[string]any {
	var doc map[string]any
	must(t, json.Unmarshal(encode(t, p), &doc))
	return doc
}

// TestSecurityRow31ForeignHost: a plan compiled on another host is refused for
// its nodes on the host build root: their keys name that host's /usr.
func TestSecurityRow31ForeignHost(t *testing.T) {
	p := compile(t, writeWorkspace(t, t.TempDir(), verifySpec))
	other := testHost
	other.OSVersion = "2"
	_, err := plan.Verify(p, plan.VerifyOptions{Host: other})
	if !errors.Is(err, plan.ErrForeignHost) || !strings.Contains(err.Error(), "images.a.stages[0] (keys.cue:8:3) runs on the host's /usr") {
		t.Fatalf("got %v", err)
	}
	// A plan with no node on the host root runs anywhere.
	hermetic := compile(t, writeWorkspace(t, t.TempDir(), `package keys
sources: files: path: "files"
images: a: {version: "1", buildroot: "images.r", stages: [{type: "strata.hostname", options: hostname: "a"}]}
images: r: {version: "1", stages: [{type: "strata.copy", options: input: "f", inputs: f: "sources.files"}]}
`))
	if _, err := plan.Verify(hermetic, plan.VerifyOptions{Host: other}); err == nil {
		// images.r runs on the host root too; make sure the message names it.
		t.Fatal("images.r runs on the host root: want a refusal")
	} else if !strings.Contains(err.Error(), "images.r.stages[0]") {
		t.Fatalf("got %v", err)
	}
}

// TestVerifyAcceptsExamples: every example's plan verifies on this host.
func TestVerifyAcceptsExamples(t *testing.T) {
	for _, ex := range []string{"minimal", "fleet"} {
		p := compile(t, filepath.Join("..", "examples", ex))
		if _, err := plan.Verify(p, plan.VerifyOptions{Host: testHost}); err != nil {
			t.Errorf("%s: %v", ex, err)
		}
	}
}

// TestSecurityRow41PathSourceLeavesWorkspace: a path source, or a symbolic link
// on its way, that leads out of the workspace is an error naming the source,
// never a copy of the host's files; links inside a source are kept as links.
func TestSecurityRow41PathSourceLeavesWorkspace(t *testing.T) {
	for _, path := range []string{"lnk/", "lnk/hostname", "files/up/etc/"} {
		t.Run(path, func(t *testing.T) {
			dir := writeWorkspace(t, t.TempDir(), `package keys
sources: s: path: "`+path+`"
`)
			must(t, os.Symlink("/etc", filepath.Join(dir, "lnk")))
			must(t, os.Symlink("../../../../../../../..", filepath.Join(dir, "files", "up")))
			ws, err := lang.Load(context.Background(), dir)
			must(t, err)
			_, err = compiler.Compile(context.Background(), ws, compiler.Options{Host: testHost})
			if err == nil || !strings.Contains(err.Error(), "keys.cue:2:") || !strings.Contains(err.Error(), "sources.s.path") ||
				!strings.Contains(err.Error(), "leads outside the workspace") {
				t.Fatalf("got %v", err)
			}
		})
	}
	// A link inside the source is an entry of the source, not followed.
	dir := writeWorkspace(t, t.TempDir(), "package keys\nsources: s: path: \"files\"\n")
	must(t, os.Symlink("/etc/shadow", filepath.Join(dir, "files", "shadow")))
	p := compile(t, dir)
	var entries []plan.PathEntry
	must(t, plan.WalkPathSource(context.Background(), dir, "files", func(e plan.SourceEntry) error {
		entries = append(entries, plan.PathEntry{Path: e.Path, Target: e.Target})
		return nil
	}))
	if len(entries) != 2 || entries[1].Path != "shadow" || entries[1].Target != "/etc/shadow" || p == nil {
		t.Fatalf("entries %+v", entries)
	}
}

// TestEncodeAsJSONIndent: Plan.Encode writes the examples' plans byte for
// byte as encoding/json's indenting encoder does (what it used before).
func TestEncodeAsJSONIndent(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("..", "examples"))
	must(t, err)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		t.Run(e.Name(), func(t *testing.T) {
			p := compile(t, filepath.Join("..", "examples", e.Name()))
			var got, want bytes.Buffer
			must(t, p.Encode(&got))
			enc := json.NewEncoder(&want)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			must(t, enc.Encode(p))
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("Plan.Encode differs from json.Encoder with SetIndent (%d and %d bytes)", got.Len(), want.Len())
			}
		})
	}
}
