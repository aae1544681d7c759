// Command strata-sandbox is strata's companion binary: the staging helper and
// the built-in stages, without CUE and the rest of the command line, so that
// the processes strata starts for every stage cost a few milliseconds to start
// instead of tens. strata uses it when it sits next to the strata executable
// and is the very build strata was linked with (see sandbox.UseCompanion);
// otherwise strata runs itself for both.
//
// Inside the sandbox it is bound at /run/strata/bin/strata and run as
//
//	/run/strata/bin/strata builtin TYPE
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/strata-build/strata/executor/builtin"
	"github.com/strata-build/strata/executor/sandbox"
)

func main() {
	sandbox.MaybeRunHelper()
	os.Exit(run(os.Args[1:]))
}

// run mirrors `strata builtin TYPE`: the same output and exit codes.
func run(args []string) int {
	if len(args) != 2 || args[0] != "builtin" {
		fmt.Fprintln(os.Stderr, "usage: strata-sandbox builtin TYPE (strata runs it inside its sandbox)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := builtin.RunFromSandbox(ctx, args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "strata: "+err.Error())
		if errors.Is(err, context.Canceled) {
			return 130
		}
		return 1
	}
	return 0
}
