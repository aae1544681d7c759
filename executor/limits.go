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
	if l := n.Limits; l != nil {
		// A floor (a limit set in only one of the places that share the node)
		// is raised to the default the other place left in force.
		if l.TimeoutSeconds > 0 {
			timeout = time.Duration(l.TimeoutSeconds) * time.Second
			if l.Floor(plan.LimitTimeout) {
				timeout = max(timeout, sandbox.DefaultTimeout)
			}
		}
		if l.Memory > 0 {
			spec.MaxMemory = l.Memory
			if l.Floor(plan.LimitMemory) {
				spec.MaxMemory = max(spec.MaxMemory, sandbox.DefaultMaxMemory())
			}
		}
		if l.TmpSize > 0 {
			spec.TmpSize = l.TmpSize
			if l.Floor(plan.LimitTmpSize) {
				spec.TmpSize = max(spec.TmpSize, sandbox.DefaultTmpSize())
			}
		}
	}
	if r.opts.Timeout > 0 && r.opts.Timeout < timeout {
		timeout = r.opts.Timeout
	}
	spec.Timeout = timeout
}
