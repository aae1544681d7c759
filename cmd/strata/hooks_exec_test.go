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

// TestHookCannotWriteOutputsExec: a post-build hook sees its image's outputs
// read-only at STRATA_OUTPUTS, with STRATA_IMAGE and STRATA_VERSION set; a
// write there fails and the store is unchanged.
func TestHookCannotWriteOutputsExec(t *testing.T) {
	ws := writeWS(t, `package test
images: img: {
	version: "7"
	stages: [{type: "strata.files", options: files: "/etc/motd": content: "hi\n"}]
	outputs: [{type: "tar"}]
	hooks: ["inspect"]
}
hooks: inspect: {on: "post-build", command: ["/bin/sh", "-c", """
	test "$STRATA_IMAGE" = img && test "$STRATA_VERSION" = 7 || exit 10
	test "$STRATA_OUTPUTS" = /run/strata/outputs/img.tar || exit 11
	tar -tf "$STRATA_OUTPUTS" | grep -q etc/motd || exit 12
	if echo tampered >> "$STRATA_OUTPUTS"; then exit 13; fi
	if rm -f "$STRATA_OUTPUTS" && ! test -e "$STRATA_OUTPUTS"; then exit 14; fi
	echo inspected
	"""]}
`)
	cache := t.TempDir()
	jb := buildJSON(t, ws, cache)
	if jb.code != 0 {
		t.Fatalf("exit %d: %s\n%s", jb.code, jb.errText, jb.stderr)
	}
	tar := jb.artifact(t, "img.tar")
	if got := fileSHA(t, tar.Path); got != string(tar.Digest) {
		t.Errorf("img.tar is %s, the build says %s", got, tar.Digest)
	}
	if r := runCLI(t, ws, cache, "cache", "verify"); r.code != 0 {
		t.Errorf("cache verify after the hook: exit %d\n%s", r.code, r.stdout)
	}
}
