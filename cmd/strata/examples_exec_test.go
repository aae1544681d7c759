package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/executor"
)

// TestFleetExampleExec builds examples/fleet as a user would: the probe runs
// first and the per-device test template expands over the bench it found; every
// image's outputs pass the lint hook, which runs in the host-tools image, and
// the cleanup hook runs; nothing of host-tools (a build root) is exported; the
// probe runs once. strata test then runs the per-device test jobs, each
// against its device type's image.
func TestFleetExampleExec(t *testing.T) {
	strataBin(t)
	ws, cache := copyWorkspace(t, filepath.Join("..", "..", "examples", "fleet")), t.TempDir()
	jb := buildJSON(t, ws, cache)
	if jb.code != 0 {
		t.Fatalf("build: exit %d: %s\n%s", jb.code, jb.errText, jb.stderr)
	}
	var artifacts []string
	for _, a := range jb.result.Artifacts {
		artifacts = append(artifacts, a.Image+"/"+a.Name)
	}
	want := []string{"base/base.tar.zst", "fleet-x86-gateway/fleet-x86-gateway.squashfs", "fleet-x86-nuc/fleet-x86-nuc.squashfs", "fleet-x86-thin-client/fleet-x86-thin-client.squashfs"}
	if d := cmp.Diff(want, artifacts); d != "" {
		t.Errorf("artifacts (-want +got):\n%s", d)
	}
	started := jb.started()
	for _, name := range []string{"jobs.bench/nuc-7", "jobs.bench/thin-3", "jobs.bench/gw-1", "images.fleet-x86-nuc.hooks.lint", "images.fleet-x86-nuc.hooks.cleanup"} {
		if !slices.Contains(started, name) {
			t.Errorf("%s did not run (ran: %v)", name, started)
		}
	}
	probeRuns := 0
	for _, n := range started {
		if n == "jobs.probe" {
			probeRuns++
		}
	}
	if probeRuns != 1 || slices.Contains(started, "jobs.bench/pi-2") {
		t.Errorf("probe ran %d times; ran: %v", probeRuns, started)
	}
	for _, ev := range jb.events {
		if ev.Kind == executor.EventFailed || ev.Kind == executor.EventWarning {
			t.Errorf("%s %s: %s%s", ev.Kind, ev.Name, ev.Error, ev.Line)
		}
	}
	r := runCLI(t, ws, cache, "logs", "images.fleet-x86-nuc.hooks.lint")
	if r.code != 0 || !strings.Contains(r.stdout, "lint: fleet-x86-nuc 2.1.0: fleet-x86-nuc.squashfs ok") {
		t.Errorf("lint log: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = runCLI(t, ws, cache, "--output", "json", "test")
	var doc struct {
		OK   bool
		Jobs []struct{ Name, Status, Log string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 || !doc.OK {
		t.Fatalf("test: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	got := map[string]string{}
	for _, j := range doc.Jobs {
		got[j.Name] = j.Status
		if strings.HasPrefix(j.Name, "jobs.bench/") && !strings.Contains(j.Log, "ok") {
			t.Errorf("%s log: %q", j.Name, j.Log)
		}
	}
	wantJobs := map[string]string{"jobs.probe": "passed", "jobs.bench/nuc-7": "passed", "jobs.bench/thin-3": "passed", "jobs.bench/gw-1": "passed"}
	if d := cmp.Diff(wantJobs, got); d != "" {
		t.Errorf("test report (-want +got):\n%s", d)
	}
}
