package main

import (
	"strings"
	"testing"

	"github.com/strata-build/strata/executor"
)

const hooksWS = `package test

images: img: {
	version: "1"
	stages: [
		{type: "strata.files", options: files: "/etc/motd": content: "hi\n"},
		STAGE
	]
	outputs: [{type: "tar"}]
	hooks: ["gate", "tidy"]
}
hooks: gate: {on: "post-build", command: ["/bin/sh", "-c", "echo gate; exit GATE"]}
hooks: tidy: {on: "cleanup", command: ["/bin/sh", "-c", "echo tidy"]}
`

// TestHookOrderExec: a cleanup hook runs last, after every other node has
// finished, also when a stage failed; a post-build hook that fails (on_failure
// "fail") fails the build and no output of its image is reported or exported
// as good.
func TestHookOrderExec(t *testing.T) {
	for _, tc := range []struct {
		name, stage, gate string
		wantExported      bool
	}{
		{"all pass", "", "0", true},
		{"gate fails", "", "4", false},
		{"stage fails", `{type: "strata.run", options: command: ["/bin/sh", "-c", "exit 3"]},`, "0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.NewReplacer("STAGE", tc.stage, "GATE", tc.gate).Replace(hooksWS)
			jb := buildJSON(t, writeWS(t, src), t.TempDir())
			if (jb.code == 0) != tc.wantExported {
				t.Fatalf("exit %d: %s", jb.code, jb.errText)
			}
			if got := len(jb.result.Artifacts) > 0; got != tc.wantExported {
				t.Errorf("artifacts %+v, want exported %v", jb.result.Artifacts, tc.wantExported)
			}
			// The cleanup hook starts after every other node reached its end.
			finished := map[string]bool{}
			var cleanupStarted, cleanupDone bool
			for _, ev := range jb.events {
				isTidy := strings.HasSuffix(ev.Name, "hooks.tidy")
				switch ev.Kind {
				case executor.EventStarted:
					if isTidy {
						cleanupStarted = true
						if len(finished) != len(jb.result.Nodes)-1 {
							t.Errorf("cleanup started with %d of %d other nodes finished", len(finished), len(jb.result.Nodes)-1)
						}
					}
				case executor.EventDone, executor.EventCached, executor.EventFailed, executor.EventSkipped:
					if isTidy {
						cleanupDone = ev.Kind == executor.EventDone
					} else {
						finished[ev.Node] = true
					}
				}
			}
			if !cleanupStarted || !cleanupDone {
				t.Errorf("the cleanup hook did not run to its end:\n%s", jb.stderr)
			}
		})
	}
}
