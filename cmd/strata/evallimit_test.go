package main

import (
	"testing"
	"time"
)

// TestSecurityRow21EvalLimitUnits: the evaluation limits take the units people
// write and refuse the rest, instead of falling back to the default silently.
func TestSecurityRow21EvalLimitUnits(t *testing.T) {
	for _, tc := range []struct {
		timeout, memory string
		wantT           time.Duration
		wantM           uint64
		bad             bool
	}{
		{"", "", defaultEvalTimeout, defaultEvalMemory, false},
		{"5", "1GiB", 5 * time.Second, 1 << 30, false},
		{"1.5", "512M", 1500 * time.Millisecond, 512 << 20, false},
		{"90s", "2G", 90 * time.Second, 2 << 30, false},
		{"5m", "4096", 5 * time.Minute, 4096, false},
		{" 7 ", "64 KiB", 7 * time.Second, 64 << 10, false},
		{"soon", "", 0, 0, true},
		{"0", "", 0, 0, true},
		{"-1s", "", 0, 0, true},
		{"NaN", "", 0, 0, true},
		{"1e300", "", 0, 0, true},
		{"", "lots", 0, 0, true},
		{"", "0", 0, 0, true},
		{"", "-1G", 0, 0, true},
	} {
		t.Setenv("STRATA_EVAL_TIMEOUT", tc.timeout)
		t.Setenv("STRATA_EVAL_MEMORY", tc.memory)
		gotT, gotM, err := evalLimits()
		if tc.bad {
			if err == nil || exitCode(err) != exitBadSpec {
				t.Errorf("timeout %q memory %q: err %v, want a usage error", tc.timeout, tc.memory, err)
			}
			continue
		}
		if err != nil || gotT != tc.wantT || gotM != tc.wantM {
			t.Errorf("timeout %q memory %q: %v %d %v, want %v %d", tc.timeout, tc.memory, gotT, gotM, err, tc.wantT, tc.wantM)
		}
	}
}
