package lang_test

import (
	"flag"
	"os"
	"testing"
)

// TestMain shortens the fuzzer's minimization of new inputs (60s by default) when
// it is not set on the command line: one load takes tens of milliseconds, so with
// the default a short -fuzztime run spends all its time minimizing the first
// interesting input and executes almost nothing (CUE is large: nearly every
// input reaches new coverage).
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.fuzzminimizetime" {
			set = true
		}
	})
	if !set {
		if err := flag.Set("test.fuzzminimizetime", "10x"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
