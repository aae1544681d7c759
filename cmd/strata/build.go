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
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/store"
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
}

func newBuildCmd(g *globals) *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "build [plan.json|DIR] [TARGET...] [-j N] [--keep-going] [--explain]",
		Short: "Build the workspace's images (or a plan file)",
		Long: `build runs the plan of the workspace (-C DIR, or a DIR or plan.json given as the
first argument) over the local store: sources are fetched, stages run in
sandboxes, outputs are assembled, hooks and jobs run. Nodes already in the cache
are not run again. A TARGET is an image (images.NAME or NAME: its tree, outputs
and hooks) or any node name; without targets the whole plan is built.

The outputs are materialised under --out-dir (default <cache dir>/out) as
<image>/<output name>; build prints one line per output: its path and digest.
Path sources in a plan file are read relative to -C DIR.`,
		RunE: func(cmd *cobra.Command, a []string) error {
			return runBuild(cmd.Context(), g, f, a)
		},
	}
	fl := cmd.Flags()
	fl.IntVarP(&f.jobs, "jobs", "j", 0, "nodes to run at once (default: number of CPUs)")
	fl.BoolVar(&f.keepGoing, "keep-going", false, "keep building what does not depend on a failed node")
	fl.BoolVar(&f.explain, "explain", false, "say why each rebuilt node is not cached")
	fl.StringVar(&f.outDir, "out-dir", "", "where outputs are put (default <cache dir>/out)")
	fl.DurationVar(&f.timeout, "timeout", 0, "cap on every stage's, job's and hook's run time, below its own timeout (default 1h); e.g. 30m")
	return cmd
}

// loadPlan returns the plan to build and the remaining arguments: the first
// argument may be a plan file (*.json) or a workspace directory; otherwise the
// workspace is -C DIR.
func (g *globals) loadPlan(ctx context.Context, args []string) (*plan.Plan, []string, error) {
	if len(args) > 0 {
		a := args[0]
		if info, err := os.Stat(a); err == nil {
			switch {
			case !info.IsDir() && strings.HasSuffix(a, ".json"):
				f, err := os.Open(a)
				if err != nil {
					return nil, nil, err
				}
				defer f.Close()
				p, err := plan.Decode(f)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: %w", a, err)
				}
				return p, args[1:], nil
			case info.IsDir() && isWorkspaceDir(a):
				g.dir = a
				args = args[1:]
			}
		}
	}
	p, err := g.cachedCompile(ctx)
	return p, args, err
}

// isWorkspaceDir reports whether a looks like a workspace directory rather than
// a target name: it has a cue.mod directory.
func isWorkspaceDir(a string) bool {
	info, err := os.Stat(filepath.Join(a, "cue.mod"))
	return err == nil && info.IsDir()
}

// signalExit maps a cancelled context to 130 (SIGINT) or 143 (SIGTERM).
func signalExit(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	code := 130
	if cause := context.Cause(ctx); cause != nil && strings.Contains(cause.Error(), "terminated") {
		code = 143
	}
	return &reportedError{code: code, err: err}
}

func (g *globals) openStore() (*store.Store, error) {
	dir := g.storeDir()
	st, err := store.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return st, nil
}

func runBuild(ctx context.Context, g *globals, f buildFlags, args []string) error {
	started := time.Now()
	p, targets, err := g.loadPlan(ctx, args)
	if err != nil {
		return err
	}
	if _, err := executor.ResolveTargets(p, targets); err != nil {
		return &usageError{err}
	}
	if f.jobs < 0 {
		return &usageError{fmt.Errorf("-j must be positive")}
	}
	if f.timeout < 0 {
		return &usageError{fmt.Errorf("--timeout must be positive")}
	}
	st, err := g.openStore()
	if err != nil {
		return err
	}
	defer st.Close()
	bin := os.Getenv(binaryEnv)
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return err
		}
	}
	r := newRenderer(g)
	res, err := executor.Build(ctx, p, executor.Options{
		Store: st, Binary: bin, Jobs: f.jobs, KeepGoing: f.keepGoing,
		Targets: targets, Workspace: g.dir, Events: r.event, Explain: f.explain, OutDir: f.outDir,
		Timeout: f.timeout,
	})
	r.close()
	if res == nil {
		return signalExit(ctx, err)
	}
	elapsed := time.Since(started)
	if g.json() {
		doc := map[string]any{"kind": "result", "ok": err == nil, "result": res, "elapsed": elapsed.Seconds()}
		if err != nil {
			doc["error"] = err.Error()
		}
		b, _ := json.Marshal(doc)
		fmt.Fprintln(g.stdout, string(b))
	} else {
		for _, a := range res.Artifacts {
			fmt.Fprintf(g.stdout, "%s\t%s\n", a.Path, a.Digest)
		}
		fmt.Fprintf(g.stderr, "strata: %d built, %d cached, %d failed, %d skipped in %.2fs\n",
			res.Built, res.Cached, res.Failed, res.Skipped, elapsed.Seconds())
		if err != nil {
			fmt.Fprintln(g.stderr, "strata: "+err.Error())
		}
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return signalExit(ctx, err)
	}
	return &reportedError{code: exitFailed, err: err}
}

// renderer shows build events: JSON lines on stdout with --output json, a live
// view on a terminal, plain lines otherwise.
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
		r.enc = json.NewEncoder(g.stdout)
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
	case executor.EventDone, executor.EventFailed, executor.EventSkipped, executor.EventCached:
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

// formatEvent is the plain-text line of an event, e.g.
// "[  3/12] done    images.minimal.stages[2] strata.hostname (0.21s)".
func formatEvent(ev executor.Event) string {
	prefix := fmt.Sprintf("[%3d/%d] %-7s %s", ev.Index, ev.Total, ev.Kind, ev.Name)
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
		return fmt.Sprintf("%s (%.2fs): %s", prefix, ev.Elapsed.Seconds(), msg)
	case executor.EventSkipped:
		return prefix + ": " + ev.Error
	case executor.EventLog:
		return fmt.Sprintf("        | %s: %s", ev.Name, ev.Line)
	case executor.EventWarning, executor.EventExplain:
		return prefix + ": " + ev.Line
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
			line := fmt.Sprintf("  %5.1fs %s %s", time.Since(rn.since).Seconds(), rn.name, rn.typ)
			if rn.last != "" {
				line += " | " + rn.last
			}
			if len(line) > width-1 {
				line = line[:width-1]
			}
			b.WriteString(line + "\n")
			r.drawn++
		}
	}
	io.WriteString(r.w, b.String())
}

func (r *renderer) close() {
	if r.mode == "tty" {
		close(r.stop)
		<-r.done
	}
}

// resolveNodes maps names on the command line to plan nodes: a node name or ID,
// or an image (images.NAME or NAME: its stages and outputs).
func resolveNodes(p *plan.Plan, names []string) ([]*plan.Node, error) {
	var out []*plan.Node
	for _, name := range names {
		if n, ok := p.Node(name); ok {
			out = append(out, n)
			continue
		}
		img := strings.TrimPrefix(name, "images.")
		if _, ok := p.Images[img]; ok {
			for _, n := range p.Nodes {
				if strings.HasPrefix(n.Name, "images."+img+".") {
					out = append(out, n)
				}
			}
			continue
		}
		return nil, &usageError{fmt.Errorf("%w %q", executor.ErrUnknownTarget, name)}
	}
	return out, nil
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
			p, rest, err := g.loadPlan(ctx, a)
			if err != nil {
				return err
			}
			if len(rest) == 0 {
				return &usageError{errors.New("explain: name a node")}
			}
			nodes, err := resolveNodes(p, rest)
			if err != nil {
				return err
			}
			st, err := g.openStore()
			if err != nil {
				return err
			}
			defer st.Close()
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
		Use:   "logs [plan.json|DIR] NODE",
		Short: "Print a node's complete log",
		Long: `logs prints the complete log (stdout and stderr) of a node's last run, kept in
the store: a stage, a job, a hook, or a failed node. NODE is a plan name such as
images.base.stages[2] or a node ID. With --output json: {node, name, origin,
log_digest, log}.`,
		Args: args(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			p, rest, err := g.loadPlan(ctx, a)
			if err != nil {
				return err
			}
			if len(rest) != 1 {
				return &usageError{errors.New("logs: name one node")}
			}
			n, ok := p.Node(rest[0])
			if !ok {
				return &usageError{fmt.Errorf("%w %q", executor.ErrUnknownTarget, rest[0])}
			}
			st, err := g.openStore()
			if err != nil {
				return err
			}
			defer st.Close()
			d, err := executor.NodeLog(ctx, st, n)
			if err != nil {
				return err
			}
			rc, err := st.OpenBlob(d)
			if err != nil {
				return err
			}
			defer rc.Close()
			if !g.json() {
				_, err = io.Copy(g.stdout, rc)
				return err
			}
			b, err := io.ReadAll(rc)
			if err != nil {
				return err
			}
			return writeJSON(g.stdout, map[string]any{
				"node": n.ID, "name": n.Name, "origin": n.Origin, "log_digest": d, "log": string(b),
			})
		},
	}
}
