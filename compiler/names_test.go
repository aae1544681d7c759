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
		// Two hooks doing the same work are one node, named after neither.
		{Name: "images.c.outputs[0]"},
		{Name: "images.c.hooks.same", Aliases: []string{"images.c.hooks.gate"}},
		// A hook runs for an image (STRATA_IMAGE, STRATA_VERSION): one node per
		// image, under the per-image names.
		{Name: "images.fleet/base.hooks.pre"},
		{Name: "images.fleet/base.stages[0]"},
		{Name: "images.fleet/base.outputs[0]"},
		{Name: "hooks.ci/lint", Aliases: []string{"images.fleet/base.hooks.ci/lint"}},
		// A post-build hook sees each image's own outputs: one node per image.
		{Name: "images.fleet/base.hooks.gate"},
		{Name: "images.fleet/nuc.hooks.pre"},
		{Name: "images.fleet/nuc.outputs[0]"},
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
