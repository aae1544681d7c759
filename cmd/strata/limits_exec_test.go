package main

import (
	"strings"
	"testing"
)

// TestSecurityRow34TimeoutExec: RELIABILITY row 34, a stage that blocks fails
// after its timeout with its log kept, --timeout caps every node, and a
// timeout is no part of the cache key.
func TestSecurityRow34TimeoutExec(t *testing.T) {
	const spec = `package test

images: slow: {
	version: "1"
	stages: [{type: "strata.run", options: command: ["/bin/sh", "-c", "echo started; exec sleep 86400"], timeout: "%s"}]
}
`
	cache := t.TempDir()
	ws := writeWS(t, strings.Replace(spec, "%s", "2s", 1))
	r := runCLI(t, ws, cache, "build")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"images.slow.stages[0]", "timed out after 2s"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("error lacks %q:\n%s", want, r.stderr)
		}
	}
	if r := runCLI(t, ws, cache, "logs", "images.slow.stages[0]"); r.stdout != "started\n" {
		t.Errorf("log of the timed-out stage: %q %s", r.stdout, r.stderr)
	}

	// --timeout caps a node's own, longer timeout.
	ws = writeWS(t, strings.Replace(spec, "%s", "1h", 1))
	r = runCLI(t, ws, cache, "build", "--timeout", "2s")
	if r.code != 1 || !strings.Contains(r.stderr, "timed out after 2s") {
		t.Errorf("--timeout 2s: exit %d\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, ws, cache, "build", "--timeout", "-1s"); r.code != 2 {
		t.Errorf("--timeout -1s: exit %d, want 2 (usage)\n%s", r.code, r.stderr)
	}

	// A different timeout on a built stage rebuilds nothing.
	const quick = `package test

images: quick: {
	version: "1"
	stages: [{type: "strata.run", options: command: ["/bin/true"], timeout: "%s", memory: "256MiB"}]
}
`
	ws = writeWS(t, strings.Replace(quick, "%s", "5m", 1))
	if jb := buildJSON(t, ws, cache); !jb.ok {
		t.Fatalf("quick build failed:\n%s", jb.stderr)
	}
	ws = writeWS(t, strings.Replace(quick, "%s", "10m", 1))
	if jb := buildJSON(t, ws, cache); !jb.ok || len(jb.started()) != 0 {
		t.Errorf("a changed timeout rebuilt %v\n%s", jb.started(), jb.stderr)
	}
}
