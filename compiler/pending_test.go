package compiler_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/lang"
)

// pendingSpec has a template over a resource a job produces, and a static job.
const pendingSpec = `package keys

images: base: {version: "1", stages: [{type: "strata.hostname", options: hostname: "b"}]}
resources: devices: {job: "probe", schema: {name: string, category: string}}
jobs: probe: {image: "images.base", command: ["/bin/sh", "-c", "echo '{}' > /run/strata/out/records.jsonl"]}
jobs: other: command: ["/bin/true"]
templates: "optical-read": {
	resource: "devices"
	each: {
		device: _
		if: device.category == "CDROM"
		jobs: "optical/read_\(device.name)": {image: "images.base", command: ["/bin/true"], needs: ["jobs.probe"]}
	}
}
`

// TestCompilePending: a template waiting on a resource job is listed in the
// plan with the job's node, which must write records.jsonl; the plan verifies.
// Compiled again with the job's records, the template's instances join the plan
// and every node of the first plan keeps its key, so a build that ran the job
// finds it cached.
func TestCompilePending(t *testing.T) {
	dir := writeWorkspace(t, t.TempDir(), pendingSpec)
	p := compile(t, dir)
	probe, ok := p.Node("jobs.probe")
	if !ok {
		t.Fatal("no jobs.probe")
	}
	want := []plan.Pending{{Template: "optical-read", Resource: "devices", Job: "jobs.probe", Node: probe.ID, Origin: "keys.cue:7:12"}}
	if d := cmp.Diff(want, p.Pending); d != "" {
		t.Errorf("pending (-want +got):\n%s", d)
	}
	if !strings.Contains(string(probe.Options), `"records.jsonl"`) {
		t.Errorf("probe options %s do not name records.jsonl", probe.Options)
	}
	if d := cmp.Diff([]string{probe.ID}, p.PendingJobs()); d != "" {
		t.Errorf("PendingJobs (-want +got):\n%s", d)
	}
	if _, err := plan.Verify(p, plan.VerifyOptions{Host: testHost}); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if _, err := roundTrip(t, p, func(map[string]any) {}); err != nil {
		t.Fatalf("decode: %v", err)
	}

	ws, err := lang.Load(context.Background(), dir, lang.WithJobRecords(map[string][]byte{
		"probe": []byte(`{"name": "sr0", "category": "CDROM"}` + "\n" + `{"name": "sda", "category": "DISK"}` + "\n"),
	}))
	must(t, err)
	full, err := compiler.Compile(context.Background(), ws, compiler.Options{Host: testHost})
	must(t, err)
	if len(full.Pending) != 0 {
		t.Errorf("expanded plan still pending: %+v", full.Pending)
	}
	if _, ok := full.Node("jobs.optical/read_sr0"); !ok {
		t.Error("no instance jobs.optical/read_sr0")
	}
	if _, ok := full.Node("jobs.optical/read_sda"); ok {
		t.Error("the filter let the DISK record through")
	}
	for _, n := range p.Nodes {
		if m, ok := full.Node(n.Name); !ok || m.ID != n.ID {
			t.Errorf("%s changed its key once the records were known", n.Name)
		}
	}
	if _, err := plan.Verify(full, plan.VerifyOptions{Host: testHost}); err != nil {
		t.Fatalf("verify: %v", err)
	}
}

// TestVerifyPending: Verify refuses a pending template that does not wait on a
// resource job of the plan, or is not named or ordered as a compiler writes it.
func TestVerifyPending(t *testing.T) {
	p := compile(t, writeWorkspace(t, t.TempDir(), pendingSpec))
	other, _ := p.Node("jobs.other")
	base, _ := p.Node("images.base.stages[0]")
	pending := func(edit func(pt *plan.Pending)) func(doc map[string]any) {
		return func(doc map[string]any) {
			pt := p.Pending[0]
			edit(&pt)
			doc["pending"] = []any{map[string]any{"template": pt.Template, "resource": pt.Resource, "job": pt.Job, "node": pt.Node, "origin": pt.Origin}}
		}
	}
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"unknown node", pending(func(pt *plan.Pending) { pt.Node = strings.Repeat("0", 64) }), "is not a job of the plan"},
		{"stage node", pending(func(pt *plan.Pending) { pt.Node = base.ID }), "is not a job of the plan"},
		{"another job", pending(func(pt *plan.Pending) { pt.Node = other.ID }), "is jobs.other, not jobs.probe"},
		{"job without records", pending(func(pt *plan.Pending) { pt.Node, pt.Job = other.ID, "jobs.other" }), "job jobs.other does not list records.jsonl among its outputs"},
		{"bad template name", pending(func(pt *plan.Pending) { pt.Template = "../x" }), `invalid name "../x"`},
		{"control characters", pending(func(pt *plan.Pending) { pt.Origin = "keys.cue:1:1\x1b[2J" }), "origin has control characters"},
		{"twice", func(doc map[string]any) {
			pending(func(*plan.Pending) {})(doc)
			doc["pending"] = append(doc["pending"].([]any), doc["pending"].([]any)[0])
		}, "not sorted by name, or one appears twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := roundTrip(t, p, tc.edit)
			if err == nil {
				_, err = plan.Verify(q, plan.VerifyOptions{Host: testHost})
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "invalid plan: pending template") {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestRecordsFileIsPlanRecordsFile: lang and the plan name the records file
// alike (lang may not import the plan package).
func TestRecordsFileIsPlanRecordsFile(t *testing.T) {
	if lang.RecordsFile != plan.RecordsFile {
		t.Fatalf("lang.RecordsFile %q, plan.RecordsFile %q", lang.RecordsFile, plan.RecordsFile)
	}
}
