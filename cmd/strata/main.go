// Command strata validates CUE workspaces, compiles them into content-addressed
// plans, builds them in sandboxes and publishes the results as OCI artifacts.
package main

import (
	"os"

	"github.com/strata-build/strata/executor/sandbox"
)

// sandboxBuildID is the Go build ID of the strata-sandbox binary built with
// this one (make build sets it); the sandbox uses that companion for its
// helper and built-in stages when it sits next to this executable.
var sandboxBuildID string

func main() {
	sandbox.MaybeRunHelper()
	sandbox.UseCompanion(sandboxBuildID)
	os.Exit(Main())
}
