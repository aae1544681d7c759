package executor

import (
	"testing"
	"time"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/sandbox"
)

// TestLimitFloors: a limit that is a floor (set in only one of the places a
// shared node comes from) is raised to the default the other place left in
// force; a cap is applied as written; build --timeout caps both.
func TestLimitFloors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		l        *plan.Limits
		opt      time.Duration
		timeout  time.Duration
		mem, tmp int64
	}{
		{"no limits", nil, 0, sandbox.DefaultTimeout, 0, 0},
		{"caps", &plan.Limits{TimeoutSeconds: 300, Memory: 1 << 20, TmpSize: 1 << 20}, 0, 5 * time.Minute, 1 << 20, 1 << 20},
		{"floors under the defaults", &plan.Limits{TimeoutSeconds: 300, Memory: 1 << 20, TmpSize: 1 << 20,
			AtLeastDefault: []string{plan.LimitTimeout, plan.LimitMemory, plan.LimitTmpSize}},
			0, sandbox.DefaultTimeout, sandbox.DefaultMaxMemory(), sandbox.DefaultTmpSize()},
		{"floors above the defaults", &plan.Limits{TimeoutSeconds: 7200, AtLeastDefault: []string{plan.LimitTimeout}}, 0, 2 * time.Hour, 0, 0},
		{"build --timeout caps a floor", &plan.Limits{TimeoutSeconds: 300, AtLeastDefault: []string{plan.LimitTimeout}}, time.Minute, time.Minute, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &LocalRunner{opts: Options{Timeout: tc.opt}}
			var spec sandbox.Spec
			r.applyLimits(&plan.Node{Limits: tc.l}, &spec)
			if spec.Timeout != tc.timeout || spec.MaxMemory != tc.mem || spec.TmpSize != tc.tmp {
				t.Errorf("timeout %v, memory %d, tmp %d; want %v, %d, %d", spec.Timeout, spec.MaxMemory, spec.TmpSize, tc.timeout, tc.mem, tc.tmp)
			}
		})
	}
}
