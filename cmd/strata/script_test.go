package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/strata-build/strata/executor/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.MaybeRunHelper()
	testscript.Main(cleanupM{m}, map[string]func(){
		"strata": func() { os.Exit(Main()) },
	})
}

// cleanupM removes what the tests built (the static binary of the exec tests)
// once they ran, since testscript.Main exits the process.
type cleanupM struct{ m *testing.M }

func (c cleanupM) Run() int {
	code := c.m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	return code
}

// TestScripts runs the CLI over txtar fixtures in testdata/script, as cue's own
// tests do. STRATA_UPDATE=1 rewrites the expected outputs (cmp files) in place.
func TestScripts(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:           "testdata/script",
		UpdateScripts: os.Getenv("STRATA_UPDATE") != "",
		Setup: func(e *testscript.Env) error {
			e.Setenv("EXAMPLES", filepath.Join(root, "examples"))
			e.Setenv("CUEBIN", filepath.Join(root, "bin", "cue"))
			e.Setenv("XDG_CACHE_HOME", filepath.Join(e.WorkDir, ".cache"))
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "cue" {
				_, err := os.Stat(filepath.Join(root, "bin", "cue"))
				return err == nil, nil
			}
			return false, nil
		},
	})
}
