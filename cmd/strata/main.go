// Command strata validates CUE workspaces, compiles them into content-addressed
// plans, builds them in sandboxes and publishes the results as OCI artifacts.
package main

import (
	"os"

	"github.com/strata-build/strata/executor/sandbox"
)

func main() {
	sandbox.MaybeRunHelper()
	os.Exit(Main())
}
