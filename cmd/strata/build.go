package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/compiler/compilecache"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/sandbox"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/registry"
)

// binaryEnv names a static strata binary to bind into the sandbox for built-in
// stages instead of this executable (for tests and packagers whose strata is not
// statically linked).
const binaryEnv = "STRATA_BINARY"

type buildFlags struct {
	jobs      int
	keepGoing bool
	explain   bool
	outDir    string
	timeout   time.Duration
	cacheFrom []string
	cacheTo   string
	plainHTTP bool
}

func newBuildCmd(g *globals) *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "build [plan.json|DIR] [TARGET...] [-j N] [--keep-going] [--explain]",
		Short: "Build the workspace's images (or a plan file)",
		Long: `build runs the plan of the workspace (-C DIR, or a DIR or plan.json given as the
first argument) over the local store: sources are fetched, stages run in
sandboxes, outputs are assembled, hooks and jobs run. Nodes already in the cache
are not run again; when nothing changed since the last successful build of the
same targets (workspace, store entries and exported outputs alike), build
answers from that build's record without reading the plan (-v says so). A
TARGET is an image (images.NAME or NAME: its tree, outputs and hooks) or any
node name; without targets the whole plan is built.

Outputs are exported to the workspace's out/ directory (--out-dir to change) as
<image>/<output name>: copies you own and may change; a rebuild puts back what
was edited or removed, and an image's directory holds exactly what its last
successful build produced (a target naming some of its outputs, such as
images.NAME.outputs[1], replaces those and leaves the others as an earlier
build made them; a build of the whole workspace removes the exports of images
it no longer has). build prints one line per output: its path and
digest. An image whose build failed is not exported: build says its out
directory is stale. Path sources in a plan file are read relative to -C DIR.

With --output json, stdout holds one document, {ok, result, error, elapsed}
(durations are seconds everywhere), and the events are JSON lines on stderr.
Ctrl-C stops the build: running stages are killed, nothing partial is kept,
and strata exits 130 (143 for SIGTERM); the next build resumes from the cache.`,
		Example: `  strata build                          # the whole workspace in .
  strata -C examples/minimal build      # another workspace
  strata build images.minimal -j 2      # one image and what it needs
  strata compile -o plan.json && strata build plan.json
  strata build --keep-going --explain   # say why each rebuilt node is not cached
  strata --output json build | jq '.result.artifacts[].path'`,
		RunE: func(cmd *cobra.Command, a []string) error {
			return runBuild(cmd.Context(), g, f, a)
		},
	}
	fl := cmd.Flags()
	fl.IntVarP(&f.jobs, "jobs", "j", 0, "nodes to run at once; 0 means one per CPU")
	fl.BoolVar(&f.keepGoing, "keep-going", false, "keep building what does not depend on a failed node")
	fl.BoolVar(&f.explain, "explain", false, "say why each rebuilt node is not cached")
	fl.StringVar(&f.outDir, "out-dir", "", "where outputs are exported (default: the workspace's out/)")
	fl.StringArrayVar(&f.cacheFrom, "cache-from", nil, "a registry repository to take node results from before building them (repeatable)")
	fl.StringVar(&f.cacheTo, "cache-to", "", "a registry repository to put every node result into")
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "reach the cache registries over plain HTTP (loopback ones always are)")
	fl.DurationVar(&f.timeout, "timeout", 0, "cap on every stage's, job's and hook's run time, below its own timeout (default 1h); e.g. 30m")
	return cmd
}

var errJobs = errors.New("-j takes the number of nodes to run at once: 0 (one per CPU) or more")

// remoteCache is the tiered action cache of --cache-from and --cache-to (the
// local store first, then the registries; every result recorded locally and
// uploaded to --cache-to), or nil for the local store alone.
func remoteCache(st *store.Store, f buildFlags, r *renderer) (executor.ActionCache, error) {
	if len(f.cacheFrom) == 0 && f.cacheTo == "" {
		return nil, nil
	}
	warn := func(ev registry.Event) {
		if ev.Kind == registry.EventCacheWarning {
			r.event(executor.Event{Kind: executor.EventWarning, Name: "cache " + ev.Repository, Line: ev.Message})
		}
	}
	c, err := registry.New(st, registry.Options{PlainHTTP: f.plainHTTP, UserAgent: "strata/" + strataVersion(), Events: warn})
	if err != nil {
		return nil, err
	}
	t := &registry.Tiered{Local: st, Events: warn}
	for _, repo := range f.cacheFrom {
		rc, err := c.Cache(repo)
		if err != nil {
			return nil, &usageError{fmt.Errorf("--cache-from %s: %w", repo, err)}
		}
		t.From = append(t.From, rc)
	}
	if f.cacheTo != "" {
		if t.To, err = c.Cache(f.cacheTo); err != nil {
			return nil, &usageError{fmt.Errorf("--cache-to %s: %w", f.cacheTo, err)}
		}
	}
	return t, nil
}

// strataBinary is the static strata binary bound into sandboxes for built-in
// stages: $STRATA_BINARY, else the companion built with this executable
// (strata-sandbox, no CUE, quicker to start), else this executable.
func strataBinary() (string, error) {
	if bin := os.Getenv(binaryEnv); bin != "" {
		return bin, nil
	}
	return sandbox.BuiltinBinary()
}

// loadPlan returns the plan to build and the remaining arguments: the first
// argument may be a plan file (*.json) or a workspace directory; otherwise the
// workspace is -C DIR.
//
// The plan is verified (plan.Verify) whatever its origin: a plan file is
// untrusted, and so is a compile-cache entry read back from disk.
func (g *globals) loadPlan(ctx context.Context, args []string) (*plan.Verified, []string, error) {
	p, file, rest, err := g.readPlan(ctx, args)
	if err != nil {
		return nil, nil, err
	}
	v, err := verifyPlan(p, file)
	return v, rest, err
}

// verifyPlan verifies p, read from the plan file named file ("" for the
// workspace's compile), for this host.
func verifyPlan(p *plan.Plan, file string) (*plan.Verified, error) {
	v, err := plan.Verify(p, plan.VerifyOptions{Host: plan.HostFingerprint(strataVersion())})
	if err != nil {
		if file != "" {
			err = fmt.Errorf("%s: %w", file, err)
		}
		return nil, &usageError{err}
	}
	return v, nil
}

// readPlan returns the plan args name (see planArgs), the plan file it was
// read from ("" for the workspace's compile) and the remaining arguments.
func (g *globals) readPlan(ctx context.Context, args []string) (*plan.Plan, string, []string, error) {
	file, rest := g.planArgs(args)
	if file != "" {
		p, err := readPlanFile(file)
		return p, file, rest, err
	}
	p, err := g.cachedCompile(ctx)
	return p, "", rest, err
}

// planArgs takes the plan's origin off args: a plan file (*.json), returned,
// or a workspace directory, which becomes g.dir. Otherwise the workspace is
// -C DIR and args are all targets.
func (g *globals) planArgs(args []string) (file string, rest []string) {
	if len(args) == 0 {
		return "", args
	}
	a := args[0]
	info, err := os.Stat(a)
	switch {
	case err != nil:
	case !info.IsDir() && strings.HasSuffix(a, ".json"):
		return a, args[1:]
	case info.IsDir() && isWorkspaceDir(a):
		g.dir = a
		return "", args[1:]
	}
	return "", args
}

func readPlanFile(name string) (*plan.Plan, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := plan.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// isWorkspaceDir reports whether a looks like a workspace directory rather than
// a target name: it has a cue.mod directory.
func isWorkspaceDir(a string) bool {
	info, err := os.Stat(filepath.Join(a, "cue.mod"))
	return err == nil && info.IsDir()
}

// signalExit maps a context cancelled by a signal to 128+n: 130 for SIGINT,
// 143 for SIGTERM.
func signalExit(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	code := 130
	var sc *signalCause
	if errors.As(context.Cause(ctx), &sc) {
		if s, ok := sc.sig.(syscall.Signal); ok {
			code = 128 + int(s)
		}
	}
	return &reportedError{code: code, err: err}
}

// alreadyReported is the exit for a command that has printed err itself: the
// failure code, or the signal's if the command was interrupted.
func alreadyReported(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return signalExit(ctx, err)
	}
	return &reportedError{code: exitFailed, err: err}
}

// openStore opens the store once per command: the compile cache, the build
// and what follows it share one (one directory scan, one set of locks, one
// session). run closes it when the command ends.
func (g *globals) openStore() (*store.Store, error) {
	if g.st != nil {
		return g.st, nil
	}
	st, err := store.Open(g.storeDir())
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	g.st = st
	return st, nil
}

// checkRunFlags refuses -j and --timeout values before anything is compiled
// (build and test share them).
func checkRunFlags(f buildFlags) error {
	if f.jobs < 0 {
		return &usageError{errJobs}
	}
	if f.timeout < 0 {
		return &usageError{fmt.Errorf("--timeout must be positive")}
	}
	return nil
}

func runBuild(ctx context.Context, g *globals, f buildFlags, args []string) error {
	if err := checkRunFlags(f); err != nil {
		return err
	}
	g.building = true
	started := time.Now()
	file, targets := g.planArgs(args)
	fromFile := file != ""
	var v *plan.Verified
	var planDigest digest.Digest
	if fromFile {
		p, err := readPlanFile(file)
		if err != nil {
			return err
		}
		if v, err = verifyPlan(p, file); err != nil {
			return err
		}
	} else {
		c, err := g.compileEncoded(ctx, true, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		if c.Hit != nil && len(c.Pending) == 0 && len(f.cacheFrom) == 0 && f.cacheTo == "" {
			if done, err := g.buildUpToDate(ctx, f, c, targets, started); done {
				return err
			}
		}
		p, err := g.warnedPlan(ctx, c)
		if err != nil {
			return err
		}
		if v, err = verifyPlan(p, ""); err != nil {
			return err
		}
		if len(p.Pending) == 0 {
			planDigest = c.PlanDigest
		}
	}
	// A target the plan does not know may be an instance of a pending template.
	if _, err := executor.ResolveTargets(v.Plan(), targets); err != nil && (fromFile || len(v.Plan().Pending) == 0) {
		return &usageError{err}
	}
	st, err := g.openStore()
	if err != nil {
		return err
	}
	bin, err := strataBinary()
	if err != nil {
		return err
	}
	r := newRenderer(g)
	cache, err := remoteCache(st, f, r)
	if err != nil {
		return err
	}
	res, err := g.buildExpanding(ctx, v, executor.Options{
		Cache: cache,
		Store: st, Binary: bin, Jobs: f.jobs, KeepGoing: f.keepGoing,
		Targets: targets, Workspace: g.dir, Events: r.event, Explain: f.explain, OutDir: f.outDir,
		Timeout: f.timeout, PlanDigest: planDigest,
	}, fromFile)
	r.close()
	if res == nil {
		return signalExit(ctx, err)
	}
	return g.reportBuild(ctx, r, res, err, started)
}

// buildUpToDate answers the build from the record of the last one
// (executor.UpToDate) when nothing changed since, without decoding the plan
// the compile cache holds. done is false when the build must run.
func (g *globals) buildUpToDate(ctx context.Context, f buildFlags, c *compilecache.Compiled, targets []string, started time.Time) (done bool, err error) {
	st, err := g.openStore()
	if err != nil {
		return true, err
	}
	// Events are shown only once the record is known good: a build that must
	// run after all shows its own.
	var events []executor.Event
	res, ok := executor.UpToDate(ctx, executor.Options{
		Store: st, Jobs: f.jobs, Targets: targets, Workspace: g.dir, OutDir: f.outDir, PlanDigest: c.PlanDigest,
		Events: func(ev executor.Event) { events = append(events, ev) },
	})
	if !ok {
		return false, nil
	}
	g.debugf("up to date: the last build's record holds")
	g.warnHostRoot(c.HostRoot)
	r := newRenderer(g)
	for _, ev := range events {
		r.event(ev)
	}
	r.close()
	return true, g.reportBuild(ctx, r, res, nil, started)
}

// reportBuild prints a build's result: the JSON document, or a line per
// artifact, the stale images and the summary.
func (g *globals) reportBuild(ctx context.Context, r *renderer, res *executor.BuildResult, err error, started time.Time) error {
	elapsed := time.Since(started)
	if g.json() {
		doc := map[string]any{"ok": err == nil, "result": res, "elapsed": executor.Duration(elapsed)}
		if err != nil {
			doc["error"] = err.Error()
		}
		if werr := writeJSON(g.stdout, doc); werr != nil {
			return werr
		}
	} else {
		for _, a := range res.Artifacts {
			fmt.Fprintf(g.stdout, "%s\t%s\n", terminalSafe(a.Path), a.Digest)
		}
		for _, img := range res.Pruned {
			fmt.Fprintf(g.stderr, "strata: removed %s: images.%s is no longer in the workspace\n",
				terminalSafe(filepath.Join(res.OutDir, img)), terminalSafe(img))
		}
		for _, img := range res.Stale {
			fmt.Fprintf(g.stderr, "strata: %s: not exported, this build of it failed; %s holds an earlier build's outputs\n",
				terminalSafe(img), terminalSafe(filepath.Join(res.OutDir, img)))
		}
		fmt.Fprintf(g.stderr, "strata: %s in %.2fs\n", r.summary(res), elapsed.Seconds())
		if err != nil {
			fmt.Fprintln(g.stderr, "strata: "+terminalSafeLines(err.Error()))
		}
	}
	return alreadyReported(ctx, err)
}

// renderer shows build events: JSON lines on stderr with --output json (stdout
// then holds only the result document), a live view on a terminal, plain lines
// otherwise.
type renderer struct {
	g    *globals
	mode string // json, tty, plain
	w    io.Writer

	mu      sync.Mutex
	running map[string]*runningNode
	order   []string
	drawn   int // lines of the live area on screen
	pending []string
	stop    chan struct{}
	done    chan struct{}
	enc     *json.Encoder
	stopped int // nodes skipped because the build stopped, summarised once
}

type runningNode struct {
	name  string
	typ   string
	since time.Time
	last  string
}

func newRenderer(g *globals) *renderer {
	r := &renderer{g: g, w: g.stderr, running: map[string]*runningNode{}}
	switch {
	case g.json():
		r.mode = "json"
		r.enc = json.NewEncoder(g.stderr)
		r.enc.SetEscapeHTML(false)
	case !g.noProg && isTerminal(g.stderr):
		r.mode = "tty"
		r.stop, r.done = make(chan struct{}), make(chan struct{})
		go r.loop()
	default:
		r.mode = "plain"
	}
	return r
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func (r *renderer) event(ev executor.Event) {
	if r.mode == "json" {
		r.enc.Encode(ev)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev.Kind {
	case executor.EventStarted:
		r.running[ev.Node] = &runningNode{name: ev.Name, typ: ev.Type, since: ev.Time}
		r.order = append(r.order, ev.Node)
	case executor.EventLog:
		if rn := r.running[ev.Node]; rn != nil {
			rn.last = ev.Line
		}
		if !r.g.verbose {
			return
		}
	case executor.EventSkipped:
		delete(r.running, ev.Node)
		if errors.Is(ev.Err, executor.ErrStopped) {
			r.stopped++ // one line for all of them: see summary
			return
		}
	case executor.EventDone, executor.EventFailed, executor.EventCached:
		delete(r.running, ev.Node)
	case executor.EventQueued, executor.EventBytes:
		return
	}
	line := formatEvent(ev)
	if line == "" {
		return
	}
	if r.mode == "tty" {
		r.pending = append(r.pending, line)
		return
	}
	fmt.Fprintln(r.w, line)
}

// summary is the build's final count, e.g. "3 built, 2 cached, 1 failed, 4
// skipped (build stopped)".
func (r *renderer) summary(res *executor.BuildResult) string {
	s := fmt.Sprintf("%d built, %d cached, %d failed, %d skipped", res.Built, res.Cached, res.Failed, res.Skipped)
	if n := res.ExportsFailed; n > 0 {
		s += fmt.Sprintf(", %d export%s failed", n, map[bool]string{true: "s"}[n > 1])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped > 0 {
		s += fmt.Sprintf(" (%d not run: the build stopped)", r.stopped)
	}
	return s
}

// formatEvent is the plain-text line of an event, e.g.
// "[ 3/12] done    images.minimal.stages[2] strata.hostname (0.21s)": the
// count of nodes finished so far, of all. Everything a stage could have
// written is made safe for a terminal.
func formatEvent(ev executor.Event) string {
	prefix := fmt.Sprintf("[%*d/%d] %-7s %s", len(strconv.Itoa(ev.Total)), ev.Done, ev.Total, ev.Kind, terminalSafe(ev.Name))
	if ev.Type != "" && ev.Kind != executor.EventLog {
		prefix += " " + ev.Type
	}
	switch ev.Kind {
	case executor.EventDone:
		return fmt.Sprintf("%s (%.2fs)", prefix, ev.Elapsed.Seconds())
	case executor.EventFailed:
		msg := ev.Error
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		return fmt.Sprintf("%s (%.2fs): %s", prefix, ev.Elapsed.Seconds(), terminalSafe(msg))
	case executor.EventSkipped:
		return prefix + ": " + terminalSafe(ev.Error)
	case executor.EventLog:
		return fmt.Sprintf("        | %s: %s", terminalSafe(ev.Name), terminalSafe(ev.Line))
	case executor.EventWarning, executor.EventExplain, executor.EventWaiting:
		return prefix + ": " + terminalSafe(ev.Line)
	}
	return prefix
}

func (r *renderer) loop() {
	defer close(r.done)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			r.redraw(true)
			return
		case <-t.C:
			r.redraw(false)
		}
	}
}

// redraw prints finished lines above the live area and redraws the running
// nodes with their elapsed time and last log line.
func (r *renderer) redraw(final bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	if r.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA\x1b[J", r.drawn)
	}
	for _, l := range r.pending {
		b.WriteString(l + "\n")
	}
	r.pending = r.pending[:0]
	r.drawn = 0
	if !final {
		width := 100
		if f, ok := r.w.(*os.File); ok {
			if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 20 {
				width = int(ws.Col)
			}
		}
		ids := r.order[:0]
		for _, id := range r.order {
			if r.running[id] != nil {
				ids = append(ids, id)
			}
		}
		r.order = ids
		sort.SliceStable(ids, func(i, j int) bool { return r.running[ids[i]].since.Before(r.running[ids[j]].since) })
		for _, id := range ids {
			rn := r.running[id]
			line := fmt.Sprintf("  %5.1fs %s %s", time.Since(rn.since).Seconds(), terminalSafe(rn.name), rn.typ)
			if rn.last != "" {
				line += " | " + terminalSafe(rn.last)
			}
			line = clipRunes(line, width-1)
			b.WriteString(line + "\n")
			r.drawn++
		}
	}
	io.WriteString(r.w, b.String())
}

// terminalSafe makes text from a stage, a spec or a file name safe to print:
// control characters (escape sequences, carriage returns, newlines that could
// forge a line of strata's own) and invalid UTF-8 are shown escaped, as Go
// quotes them.
func terminalSafe(s string) string {
	clean := true
	for _, c := range s {
		if c == utf8.RuneError || unicode.IsControl(c) && c != '\t' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i, w := 0, 0; i < len(s); i += w {
		c, n := utf8.DecodeRuneInString(s[i:])
		w = n
		switch {
		case c == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(c) && c != '\t':
			q := strconv.QuoteRune(c)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
	}
	return b.String()
}

// terminalSafeLines is terminalSafe for text of several lines: strata's own
// line breaks stay, every line is made safe.
func terminalSafeLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = terminalSafe(l)
	}
	return strings.Join(lines, "\n")
}

// clipRunes cuts s to at most n runes, never inside a UTF-8 sequence.
func clipRunes(s string, n int) string {
	if n < 0 {
		n = 0
	}
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}

func (r *renderer) close() {
	if r.mode == "tty" {
		close(r.stop)
		<-r.done
	}
}

func newExplainCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "explain [plan.json|DIR] NODE...",
		Short: "Say why a node is (not) cached",
		Long: `explain compares each node's key inputs with those of the last build of the same
weak key in the store, and says "cached", "never built", or which key inputs
changed (JSON paths, old → new).`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			v, rest, err := g.loadPlanNamed(ctx, a)
			if err != nil {
				return err
			}
			p := v.Plan()
			if len(rest) == 0 {
				return &usageError{errors.New("explain: name a node")}
			}
			nodes, err := executor.ResolveNodes(p, rest)
			if err != nil {
				err = &usageError{err}
			}
			if err != nil {
				return err
			}
			st, err := g.openStore()
			if err != nil {
				return err
			}
			var all []*executor.Explanation
			for _, n := range nodes {
				ex, err := executor.Explain(ctx, st, p.Host, n)
				if err != nil {
					return err
				}
				all = append(all, ex)
			}
			if g.json() {
				return writeJSON(g.stdout, map[string]any{"ok": true, "nodes": all})
			}
			for _, ex := range all {
				fmt.Fprintf(g.stdout, "%s: %s\n", ex.Name, ex.String())
			}
			return nil
		},
	}
}

func newLogsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "logs [plan.json|DIR] NODE...",
		Short: "Print the complete logs of nodes",
		Long: `logs prints the complete log (stdout and stderr) of a node's last run, kept in
the store: a stage, a job, a hook, or a failed node. NODE is a plan name such as
images.base.stages[2], a node ID, or an image (images.base or base: the logs of
its stages and hooks, in order, each under a "==> NAME <==" header). Outputs are
assembled by strata itself and keep no log. With --output json:
{ok, logs: [{node, name, origin, log_digest, log}]}.`,
		Example: `  strata logs images.minimal.stages[3]
  strata logs minimal                 # every stage of the image
  strata --output json logs jobs.probe | jq -r '.logs[0].log'`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			v, rest, err := g.loadPlanNamed(ctx, a)
			if err != nil {
				return err
			}
			if len(rest) == 0 {
				return &usageError{errors.New("logs: name a node or an image")}
			}
			nodes, err := executor.ResolveNodes(v.Plan(), rest)
			if err != nil {
				err = &usageError{err}
			}
			if err != nil {
				return err
			}
			st, err := g.openStore()
			if err != nil {
				return err
			}
			type entry struct {
				Node   string        `json:"node"`
				Name   string        `json:"name"`
				Origin string        `json:"origin"`
				Digest digest.Digest `json:"log_digest"`
				Log    string        `json:"log"`
			}
			var logs []entry
			single := len(nodes) == 1
			for _, n := range nodes {
				if n.Kind == plan.KindOutput && !single {
					continue
				}
				d, err := executor.NodeLog(ctx, st, n)
				if errors.Is(err, executor.ErrNoLog) && !single {
					continue // an image's node that never ran
				}
				if err != nil {
					return err
				}
				b, err := st.ReadBlob(ctx, d)
				if err != nil {
					return err
				}
				logs = append(logs, entry{Node: n.ID, Name: n.Name, Origin: n.Origin, Digest: d, Log: string(b)})
			}
			if g.json() {
				if logs == nil {
					logs = []entry{}
				}
				return writeJSON(g.stdout, map[string]any{"ok": true, "logs": logs})
			}
			if len(logs) == 0 {
				return fmt.Errorf("logs: no log kept for %s (never built?)", strings.Join(rest, ", "))
			}
			for i, l := range logs {
				if !single {
					if i > 0 {
						fmt.Fprintln(g.stdout)
					}
					fmt.Fprintf(g.stdout, "==> %s <==\n", l.Name)
				}
				io.WriteString(g.stdout, l.Log)
			}
			return nil
		},
	}
}
