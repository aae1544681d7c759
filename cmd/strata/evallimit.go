package main

import (
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"time"
)

// CUE's evaluator cannot be interrupted and can hang or grow without bound on
// hostile input (cue-lang/cue #4231, #2109). So the CLI evaluates a workspace under a
// watchdog: past the time or memory limit it prints one clear error and exits 2,
// instead of hanging CI or being OOM-killed with a stack dump.
const (
	defaultEvalTimeout = 5 * time.Minute
	defaultEvalMemory  = 8 << 30
)

// evalLimits are read from STRATA_EVAL_TIMEOUT (a Go duration) and
// STRATA_EVAL_MEMORY (bytes).
func evalLimits() (time.Duration, uint64) {
	timeout, mem := defaultEvalTimeout, uint64(defaultEvalMemory)
	if v, err := time.ParseDuration(os.Getenv("STRATA_EVAL_TIMEOUT")); err == nil && v > 0 {
		timeout = v
	}
	if v, err := strconv.ParseUint(os.Getenv("STRATA_EVAL_MEMORY"), 10, 64); err == nil && v > 0 {
		mem = v
	}
	return timeout, mem
}

// watchEvaluation starts the watchdog for one evaluation of dir; call the returned
// function when the evaluation is over.
func (g *globals) watchEvaluation(dir string) (stop func()) {
	timeout, limit := evalLimits()
	done := make(chan struct{})
	go func() {
		deadline := time.NewTimer(timeout)
		defer deadline.Stop()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			select {
			case <-done:
				return
			case <-deadline.C:
				g.abortEvaluation(dir, fmt.Sprintf("evaluation did not finish within %s (STRATA_EVAL_TIMEOUT)", timeout))
			case <-tick.C:
				metrics.Read(sample)
				if used := sample[0].Value.Uint64(); used > limit {
					g.abortEvaluation(dir, fmt.Sprintf("evaluation used more than %d MiB of memory (STRATA_EVAL_MEMORY)", limit>>20))
				}
			}
		}
	}()
	return func() { close(done) }
}

func (g *globals) abortEvaluation(dir, why string) {
	if g.json() {
		writeJSON(g.stdout, map[string]any{"ok": false, "error": dir + ": " + why})
	} else {
		fmt.Fprintf(g.stderr, "strata: %s: %s; is the spec recursive or exponential?\n", dir, why)
	}
	os.Exit(exitBadSpec)
}
