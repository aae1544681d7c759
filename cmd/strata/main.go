// Command strata validates CUE workspaces, compiles them into content-addressed
// plans, builds them in sandboxes and publishes the results as OCI artifacts.
package main

import (
	"os"

	"github.com/strata-build/strata/executor/sandbox"
)

// sandboxDigest is the SHA-256 ("sha256:<hex>") of the strata-sandbox binary
// built with this one (make build sets it); the sandbox uses that companion
// for its helper and built-in stages when it sits next to this executable.
var sandboxDigest string

func main() {
	sandbox.MaybeRunHelper()
	sandbox.UseCompanion(sandboxDigest)
	os.Exit(Main())
}
