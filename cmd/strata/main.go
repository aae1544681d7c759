// Command strata validates CUE workspaces, compiles them into content-addressed
// plans, builds them in sandboxes and publishes the results as OCI artifacts.
package main

import "os"

func main() { os.Exit(Main()) }
