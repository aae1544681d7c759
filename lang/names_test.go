package lang_test

import (
	"testing"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/compiler/plan"
	schema "github.com/strata-build/strata/cue"
)

// The name rule is written twice, as CUE for the loader and as Go for plans read
// from files; they must be the same string.
func TestNamePatternIsPlanNamePattern(t *testing.T) {
	v := cuecontext.New().CompileBytes(schema.Schema)
	got, err := v.LookupPath(cue.ParsePath("#NamePattern")).String()
	if err != nil {
		t.Fatal(err)
	}
	if got != plan.NamePattern {
		t.Fatalf("schema #NamePattern %q != plan.NamePattern %q", got, plan.NamePattern)
	}
}

// Names may use '/' as a namespace separator, in every keyed section, in
// references and in names templates compute.
func TestLoadSlashNames(t *testing.T) {
	ar := &archive{Files: []archiveFile{
		{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)},
		{Name: "files/motd", Data: []byte("hi\n")},
		{Name: "main.cue", Data: []byte(`package ok

sources: "net/motd": path: "files"
hooks: "ci/lint": {on: "post-build", command: ["true"]}
images: "fleet/base": {
	version: "1"
	stages: [{type: "strata.copy", inputs: m: "sources.net/motd", options: input: "m"}]
	hooks: ["ci/lint"]
}
images: "fleet/nuc": {version: "1", from: "images.fleet/base"}
jobs: "optical/read_sr0": {image: "images.fleet/nuc", command: ["true"]}
resources: "hw/devices": [{path: "sr0"}, {path: "sr1"}]
templates: "checkbox/optical": {
	resource: "hw/devices"
	each: {
		d: _
		jobs: "optical/probe_\(d.path)": {command: ["true"], needs: ["jobs.optical/read_sr0"]}
	}
}
`)},
	}}
	dir, _, _ := extract(t, ar)
	ws, err := load(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"fleet/base", "fleet/nuc"}, keys(ws.Images)); d != "" {
		t.Errorf("images (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"optical/probe_sr0", "optical/probe_sr1", "optical/read_sr0"}, keys(ws.Jobs)); d != "" {
		t.Errorf("jobs (-want +got):\n%s", d)
	}
	if got := ws.Images["fleet/nuc"].From; got != "images.fleet/base" {
		t.Errorf("from = %q", got)
	}
	if ws.Hooks["ci/lint"] == nil || ws.Sources["net/motd"] == nil || ws.Templates["checkbox/optical"] == nil {
		t.Errorf("hooks %v sources %v templates %v", keys(ws.Hooks), keys(ws.Sources), keys(ws.Templates))
	}
}
