package main

import (
	"context"

	"github.com/strata-build/strata/compiler/plan"
)

// cachedCompile returns the workspace's plan, from the compile cache when no input
// has changed since the last compile.
func (g *globals) cachedCompile(ctx context.Context) (*plan.Plan, error) {
	return g.compileWorkspace(ctx)
}
