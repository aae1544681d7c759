package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/lang"
)

// Exit codes (DESIGN §7).
const (
	exitOK      = 0
	exitFailed  = 1 // a build, hook, job or registry operation failed
	exitBadSpec = 2 // the spec or the command line is wrong; nothing was built
)

// version is set at link time (-ldflags "-X main.version=..."); otherwise it comes
// from the module's build info.
var version = ""

func strataVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Main runs strata with the process's arguments and returns its exit code.
func Main() int {
	ctx, stop := signalContext()
	defer stop()
	return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// signalCause is the cause of a context cancelled by a signal.
type signalCause struct{ sig os.Signal }

func (s *signalCause) Error() string { return "interrupted by " + s.sig.String() }

// signalContext is cancelled by SIGINT or SIGTERM, with a *signalCause that
// says which, so the exit code can follow the shell's 128+n convention. A
// second signal is left to its default action (the process dies).
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			cancel(&signalCause{sig})
			signal.Stop(ch)
		case <-done:
		}
	}()
	return ctx, func() {
		close(done)
		signal.Stop(ch)
		cancel(nil)
	}
}

// globals are the flags every command takes.
type globals struct {
	dir      string
	cacheDir string
	output   string
	verbose  bool
	noProg   bool
	// building is set by commands that run the plan: a compile then starts
	// the sandbox's one-time setup beside it.
	building bool
	// st is the store, opened once by openStore and closed by run.
	st     *store.Store
	stdout io.Writer
	stderr io.Writer
}

func (g *globals) json() bool { return g.output == "json" }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRootCmd(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if g.st != nil {
		if cerr := g.st.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	if strings.HasPrefix(err.Error(), "unknown command ") {
		// Cobra's own report of a mistyped command (in a path it resolves
		// itself, such as strata help's) is a command-line mistake too.
		code = exitBadSpec
	}
	var reported *reportedError
	if !errors.As(err, &reported) {
		if g.json() {
			writeJSON(stdout, map[string]any{"ok": false, "error": err.Error()})
		} else {
			// Errors carry text from registries, archives and sandboxes:
			// nothing in them may drive the terminal.
			fmt.Fprintln(stderr, "strata: "+terminalSafeLines(err.Error()))
		}
	}
	return code
}

// usageError marks a command-line mistake (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// reportedError carries an exit code for an error already shown to the user.
type reportedError struct {
	code int
	err  error
}

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var r *reportedError
	if errors.As(err, &r) {
		return r.code
	}
	var u *usageError
	switch {
	case errors.As(err, &u), errors.Is(err, lang.ErrInvalid), errors.Is(err, lang.ErrNotWorkspace), errors.Is(err, plan.ErrInvalid):
		return exitBadSpec
	case errors.Is(err, context.Canceled):
		return 130
	}
	return exitFailed
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "strata",
		Short: "Build OS and device images from CUE specs, reproducibly",
		Long: `strata compiles CUE workspaces that describe images, the stages that build them,
template jobs and hooks into a content-addressed plan, builds the plan in
sandboxed build roots over a local store, and publishes the results as OCI
artifacts that devices pull and install.

A typical session:
  strata init myimage && cd myimage
  strata vet              # check the spec; every error has file:line:col
  strata compile -o plan.json
  strata graph --format dot | dot -Tsvg > plan.svg

Exit codes: 0 ok; 1 a build, hook, job or registry operation failed; 2 the spec or
the command line is wrong (nothing was built); 130 interrupted (Ctrl-C); 143
terminated (SIGTERM).`,
		Example: `  strata init myimage
  strata -C myimage vet
  strata -C myimage build`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		Version:           strataVersion(),
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error { return g.check() },
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&g.dir, "dir", "C", ".", "workspace directory")
	pf.StringVar(&g.cacheDir, "cache-dir", "", "store directory (default $STRATA_CACHE_DIR, else $XDG_CACHE_HOME/strata)")
	pf.StringVar(&g.output, "output", "text", "output format: text or json")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "more detail on stderr")
	pf.BoolVar(&g.noProg, "no-progress", false, "plain lines instead of a live progress view")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err} })
	build, explain, logs := newBuildCmd(g), newExplainCmd(g), newLogsCmd(g)
	for _, c := range []*cobra.Command{build, explain, logs} {
		c.ValidArgsFunction = completeNodes(g)
	}
	root.AddCommand(
		newInitCmd(g), newVetCmd(g), newCompileCmd(g), newGraphCmd(g), newExpandCmd(g),
		newStagesCmd(g), newModCmd(g), newVersionCmd(g), newCompletionCmd(),
		build, explain, logs, newTestCmd(g), newCacheCmd(g), newDoctorCmd(g), newBuiltinCmd(g),
		newPushCmd(g), newVersionsCmd(g), newPullCmd(g), newInstallCmd(g), newRollbackCmd(g),
	)
	root.CompletionOptions.DisableDefaultCmd = true // newCompletionCmd, with examples
	root.SetHelpCommand(newHelpCmd())
	setExamples(root)
	groupCommands(root)
	return root
}

func (g *globals) check() error {
	if g.output != "text" && g.output != "json" {
		return &usageError{fmt.Errorf("--output must be text or json, not %q", g.output)}
	}
	return nil
}

// args wraps a cobra positional-argument check so a mistake exits 2.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

// didYouMean is "; did you mean X?" when a candidate is close to name, else "".
func didYouMean(name string, candidates []string) string {
	if s := lang.Suggest(name, candidates); s != "" {
		return "; did you mean " + s + "?"
	}
	return ""
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// loadWorkspace loads the workspace and, when it is invalid, reports every error
// (text on stderr, or JSON on stdout) and returns an error that exits 2.
func (g *globals) loadWorkspace(ctx context.Context, opts ...lang.Option) (*lang.Workspace, error) {
	stop, err := g.watchEvaluation(g.dir)
	if err != nil {
		return nil, err
	}
	hugeHeap()
	ws, err := lang.Load(ctx, g.dir, opts...)
	stop()
	if err == nil {
		return ws, nil
	}
	return nil, g.reportSpecError(err)
}

// loadWorkspacePartial loads the workspace; when it is invalid, it returns as much
// of it as could be modelled and the errors (specErr), for the caller to show
// with reportSpecError after what it could show.
func (g *globals) loadWorkspacePartial(ctx context.Context, opts ...lang.Option) (ws *lang.Workspace, specErr, err error) {
	stop, err := g.watchEvaluation(g.dir)
	if err != nil {
		return nil, nil, err
	}
	hugeHeap()
	ws, err = lang.Load(ctx, g.dir, opts...)
	stop()
	if errors.Is(err, lang.ErrInvalid) && ws != nil {
		return ws, err, nil
	}
	if err != nil {
		return nil, nil, g.reportSpecError(err)
	}
	return ws, nil, nil
}

func (g *globals) reportSpecError(err error) error {
	var es lang.Errors
	if !errors.As(err, &es) {
		return err
	}
	if g.json() {
		writeJSON(g.stdout, map[string]any{"ok": false, "errors": es})
	} else {
		for _, e := range es {
			fmt.Fprintln(g.stderr, e.Error())
		}
		fmt.Fprintf(g.stderr, "strata: %d error(s) in %s\n", len(es), g.dir)
	}
	return &reportedError{code: exitBadSpec, err: err}
}
