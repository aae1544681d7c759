package compiler_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/compiler/plan"
)

// Names with '/' reach the plan as they are, and hooks are named hooks.NAME.
func TestNodeNames(t *testing.T) {
	p := compile(t, writeWorkspace(t, t.TempDir(), `package keys

sources: "net/files": path: "files"
images: "fleet/base": {
	version: "1"
	stages: [{type: "strata.copy", inputs: f: "sources.net/files", options: input: "f"}]
	outputs: [{type: "tar"}]
	hooks: ["ci/lint", "pre", "gate"]
}
images: "fleet/nuc": {
	version: "1"
	from: "images.fleet/base"
	outputs: [{type: "tar"}]
	hooks: ["pre", "gate"]
}
jobs: "optical/read_sr0": {image: "images.fleet/nuc", command: ["true"]}
hooks: "ci/lint": {on: "post-build", command: ["true"]}
hooks: pre: {on: "pre-build", command: ["true"]}
hooks: gate: {on: "post-build", command: ["/bin/true"]}
hooks: same: {on: "post-build", command: ["/bin/true"]}
images: c: {version: "1", hooks: ["same", "gate"]}
`))
	type named struct {
		Name    string
		Aliases []string
	}
	var got []named
	for _, n := range p.Nodes {
		nn := named{Name: n.Name}
		for _, a := range n.Aliases {
			nn.Aliases = append(nn.Aliases, a.Name)
		}
		got = append(got, nn)
	}
	want := []named{
		{Name: "sources.net/files"},
		{Name: "images.c.outputs[0]"},
		// A hook runs for an image (STRATA_IMAGE, STRATA_VERSION): one node per
		// image, under the per-image names.
		{Name: "images.fleet/base.hooks.pre"},
		{Name: "images.fleet/base.stages[0]"},
		{Name: "images.fleet/base.outputs[0]"},
		{Name: "images.fleet/nuc.hooks.pre"},
		{Name: "images.fleet/nuc.outputs[0]"},
		// Hooks after the outputs come after every image (their build roots
		// may be built from the image). Two doing the same work are one node,
		// named after neither.
		{Name: "images.c.hooks.same", Aliases: []string{"images.c.hooks.gate"}},
		{Name: "hooks.ci/lint", Aliases: []string{"images.fleet/base.hooks.ci/lint"}},
		// A post-build hook sees each image's own outputs: one node per image.
		{Name: "images.fleet/base.hooks.gate"},
		{Name: "images.fleet/nuc.hooks.gate"},
		{Name: "jobs.optical/read_sr0"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("node names (-want +got):\n%s", d)
	}
	for _, name := range []string{"hooks.ci/lint", "images.fleet/nuc.hooks.pre", "jobs.optical/read_sr0", "images.fleet/base.stages[0]"} {
		if _, ok := p.Node(name); !ok {
			t.Errorf("p.Node(%q) finds nothing", name)
		}
	}
	for _, n := range p.Nodes {
		if n.Kind == plan.KindJob && n.Inputs.Tree != p.Images["fleet/nuc"].Tree {
			t.Errorf("job's tree %s, want fleet/nuc's %s", n.Inputs.Tree, p.Images["fleet/nuc"].Tree)
		}
	}
}

// TestHookBuildRootBuiltFromItsImage: a post-build hook whose build root is
// an image built from the hooked image (a smoke-test image from the app) is
// no cycle: the hook runs after both. Images used to be ordered by their
// hooks' build roots, the order broke the loop silently, and app-test was
// compiled before app and lost its from (its tree held only its own stage).
func TestHookBuildRootBuiltFromItsImage(t *testing.T) {
	p := compile(t, writeWorkspace(t, t.TempDir(), `package keys

images: app: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/etc/app": content: "app"}]
	outputs: [{type: "tar"}]
	hooks: ["smoke"]
}
images: "app-test": {
	version: "1"
	from: "images.app"
	stages: [{type: "strata.files", options: files: "/test.sh": {content: "x", mode: 0o755}}]
}
hooks: smoke: {on: "post-build", buildroot: "images.app-test", command: ["/bin/sh", "/test.sh"]}
`))
	node := func(name string) *plan.Node {
		n, ok := p.Node(name)
		if !ok {
			t.Fatalf("no node %s", name)
		}
		return n
	}
	app, test := node("images.app.stages[0]"), node("images.app-test.stages[0]")
	if test.Inputs.Tree != app.ID {
		t.Errorf("images.app-test.stages[0] is built on %q, want images.app's tree %s", test.Inputs.Tree, app.ID)
	}
	if hook := node("hooks.smoke"); hook.Inputs.BuildRoot != test.ID {
		t.Errorf("hooks.smoke runs in %q, want images.app-test's tree %s", hook.Inputs.BuildRoot, test.ID)
	}
}
