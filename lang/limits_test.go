package lang_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/lang"
)

// TestLoadLimits: timeout, memory and tmp_size of stages, jobs and hooks
// reach the model in Go units; unset means zero (the executor's default).
func TestLoadLimits(t *testing.T) {
	ar := parseArchive([]byte(`-- main.cue --
package limits

images: a: {
	version: "1"
	platform: arch: "amd64"
	stages: [{
		type: "strata.run"
		options: command: ["true"]
		timeout: "1h30m"
		memory: "512MiB"
		tmp_size: "1GiB"
	}, {
		type: "strata.run"
		options: command: ["true"]
	}]
}
jobs: j: {
	command: ["true"]
	timeout: "90s"
}
hooks: h: {
	on: "post-build"
	command: ["true"]
	memory: "2GiB"
}
-- cue.mod/module.cue --
` + moduleCUE))
	dir, _, _ := extract(t, ar)
	ws, err := load(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	got := []lang.Limits{ws.Images["a"].Stages[0].Limits, ws.Images["a"].Stages[1].Limits, ws.Jobs["j"].Limits, ws.Hooks["h"].Limits}
	want := []lang.Limits{
		{Timeout: 90 * time.Minute, Memory: 512 << 20, TmpSize: 1 << 30},
		{},
		{Timeout: 90 * time.Second},
		{Memory: 2 << 30},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("limits (-want +got):\n%s", d)
	}
}
