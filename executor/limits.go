package executor

import (
	"time"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/sandbox"
)

// applyLimits sets the sandbox limits of node n: its own timeout (default
// sandbox.DefaultTimeout) capped by Options.Timeout, its memory and /tmp size
// (zero keeps the sandbox's defaults). Limits are policy: no key depends on them.
func (r *LocalRunner) applyLimits(n *plan.Node, spec *sandbox.Spec) {
	timeout := sandbox.DefaultTimeout
	if n.Limits != nil {
		if n.Limits.TimeoutSeconds > 0 {
			timeout = time.Duration(n.Limits.TimeoutSeconds) * time.Second
		}
		if n.Limits.Memory > 0 {
			spec.MaxMemory = n.Limits.Memory
		}
		if n.Limits.TmpSize > 0 {
			spec.TmpSize = n.Limits.TmpSize
		}
	}
	if r.opts.Timeout > 0 && r.opts.Timeout < timeout {
		timeout = r.opts.Timeout
	}
	spec.Timeout = timeout
}
