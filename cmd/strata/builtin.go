package main

import (
	"github.com/spf13/cobra"

	"github.com/strata-build/strata/executor/builtin"
)

// newBuiltinCmd is the hidden command a built-in stage runs inside the sandbox:
// /run/strata/bin/strata builtin TYPE.
func newBuiltinCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "builtin TYPE",
		Short:  "Run a built-in stage inside the sandbox (internal)",
		Hidden: true,
		Args:   args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return builtin.RunFromSandbox(cmd.Context(), a[0])
		},
	}
}
