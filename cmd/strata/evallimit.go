package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
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

// evalLimits are read from STRATA_EVAL_TIMEOUT (seconds, or a Go duration: 90,
// 1.5, 90s, 5m) and STRATA_EVAL_MEMORY (bytes, or a size: 512M, 1GiB, 2G; the
// same syntax as cache gc --max-size, counting in 1024s). Unset or empty means
// the default; anything else that does not parse to a positive limit is an
// error, not silently the default.
func evalLimits() (time.Duration, uint64, error) {
	timeout, mem := defaultEvalTimeout, uint64(defaultEvalMemory)
	if s := strings.TrimSpace(os.Getenv("STRATA_EVAL_TIMEOUT")); s != "" {
		d, err := parseTimeout(s)
		if err != nil {
			return 0, 0, &usageError{fmt.Errorf("STRATA_EVAL_TIMEOUT=%q: %w", s, err)}
		}
		timeout = d
	}
	if s := strings.TrimSpace(os.Getenv("STRATA_EVAL_MEMORY")); s != "" {
		n, err := parseSize(strings.Join(strings.Fields(s), "")) // "64 KiB" too
		if err != nil || n <= 0 {
			return 0, 0, &usageError{fmt.Errorf("STRATA_EVAL_MEMORY=%q: want a positive size in bytes, or with a unit: 512M, 1GiB, 2G", s)}
		}
		mem = uint64(n)
	}
	return timeout, mem, nil
}

// parseTimeout reads seconds (a plain number) or a Go duration.
func parseTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(secs) || math.IsInf(secs, 0) || secs > math.MaxInt64/float64(time.Second) {
			return 0, errors.New("want seconds (300) or a duration (90s, 5m)")
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d <= 0 {
		return 0, errors.New("want a positive time: seconds (300) or a duration (90s, 5m)")
	}
	return d, nil
}

// watchEvaluation starts the watchdog for one evaluation of dir; call the returned
// function when the evaluation is over. A bad limit in the environment is a
// usage error (exit 2).
func (g *globals) watchEvaluation(dir string) (stop func(), err error) {
	timeout, limit, err := evalLimits()
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		deadline := time.NewTimer(timeout)
		defer deadline.Stop()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		// runtime.ReadMemStats, not runtime/metrics: that package's
		// initialisation costs every strata process a millisecond.
		var ms runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-deadline.C:
				g.abortEvaluation(dir, fmt.Sprintf("evaluation did not finish within %s (STRATA_EVAL_TIMEOUT)", timeout))
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				if used := ms.HeapAlloc; used > limit {
					g.abortEvaluation(dir, fmt.Sprintf("evaluation used more than %d MiB of memory (STRATA_EVAL_MEMORY)", limit>>20))
				}
			}
		}
	}()
	return func() { close(done) }, nil
}

func (g *globals) abortEvaluation(dir, why string) {
	if g.json() {
		writeJSON(g.stdout, map[string]any{"ok": false, "error": dir + ": " + why})
	} else {
		fmt.Fprintf(g.stderr, "strata: %s: %s; is the spec recursive or exponential?\n", dir, why)
	}
	os.Exit(exitBadSpec)
}
