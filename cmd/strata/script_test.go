package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/strata-build/strata/executor/sandbox"
	"github.com/strata-build/strata/internal/regtest"
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
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// registry starts the reference registry on 127.0.0.1 for the
			// rest of the script and sets $REGISTRY to its host:port.
			"registry": func(ts *testscript.TestScript, neg bool, args []string) {
				srv, err := regtest.Start(regtest.Options{})
				ts.Check(err)
				ts.Defer(srv.Close)
				ts.Setenv("REGISTRY", srv.Host)
			},
			// exits CODE PROG [ARGS...] runs PROG and checks its exit code;
			// its stdout and stderr are then checked as after exec.
			"exits": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) < 2 {
					ts.Fatalf("usage: exits CODE PROG [ARGS...]")
				}
				want, err := strconv.Atoi(args[0])
				ts.Check(err)
				got := 0
				var exit *exec.ExitError
				if err := ts.Exec(args[1], args[2:]...); errors.As(err, &exit) {
					got = exit.ExitCode()
				} else {
					ts.Check(err)
				}
				if got != want {
					ts.Fatalf("%s exited %d, want %d", args[1], got, want)
				}
			},
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
