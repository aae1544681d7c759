// Command fakecompanion stands in for a strata-sandbox of another build in the
// companion tests: whatever it is asked to run, it says so and fails.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "not-the-companion")
	os.Exit(3)
}
