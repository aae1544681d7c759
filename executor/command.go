package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/output"
	"github.com/strata-build/strata/executor/sandbox"
	"github.com/strata-build/strata/executor/store"
)

// runJob runs a job's command in its build root with the image's tree (if
// any) as a throwaway copy-on-write tree. Its result is its log.
func (r *LocalRunner) runJob(ctx context.Context, n *plan.Node, in Inputs) (Result, error) {
	host, err := r.sandboxHost(ctx, n)
	if err != nil {
		return Result{}, err
	}
	if len(n.Command) == 0 {
		return Result{}, fmt.Errorf("job has no command")
	}
	dir, err := r.st.MkdirTemp("job-")
	if err != nil {
		return Result{}, err
	}
	defer r.st.Discard(dir)
	lower := filepath.Join(dir, "empty")
	if n.Inputs.Tree != "" {
		if lower, _, err = r.checkoutOf(ctx, in, n.Inputs.Tree); err != nil {
			return Result{}, fmt.Errorf("image tree: %w", err)
		}
	} else if err := os.Mkdir(lower, 0o755); err != nil {
		return Result{}, err
	}
	root, err := r.buildRoot(ctx, n, in)
	if err != nil {
		return Result{}, err
	}
	sde, env, err := epoch(n)
	if err != nil {
		return Result{}, err
	}
	upper := filepath.Join(dir, "upper")
	out := filepath.Join(dir, "out")
	for _, d := range []string{upper, out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return Result{}, err
		}
	}
	res, err := r.sandboxed(ctx, n, host, dir, sandbox.Spec{
		Root: root, Lower: []string{lower}, Upper: upper, Command: n.Command, Env: env,
		SourceDateEpoch: sde, Network: n.Network,
		Binds: []sandbox.Bind{{Source: out, Target: JobOutPath, Writable: true}},
	})
	if err != nil {
		return res, r.commandError(n, res, err)
	}
	var o struct {
		Outputs []string `json:"outputs"`
	}
	if len(n.Options) > 0 {
		if err := json.Unmarshal(n.Options, &o); err != nil {
			return res, fmt.Errorf("job options: %w", err)
		}
	}
	for _, name := range o.Outputs {
		if fi, err := os.Lstat(filepath.Join(out, name)); err != nil || !fi.Mode().IsRegular() {
			return res, r.commandError(n, res, fmt.Errorf("the job did not write its output %s to %s", name, JobOutPath))
		}
	}
	// What the job wrote to /run/strata/out is its result tree (a probe's
	// records.jsonl, a test's report).
	t, d, err := r.st.CommitDir(ctx, out)
	if err != nil {
		return res, err
	}
	if d, err = r.normalizeOwners(ctx, t, d); err != nil {
		return res, err
	}
	res.Tree, err = r.treeDesc(d)
	return res, err
}

// JobOutPath is where a job writes what it gives back: its result tree (a
// resource job's records.jsonl).
const JobOutPath = "/run/strata/out"

// runHook runs a hook's command in its build root with the image's outputs
// read-only at /run/strata/outputs/<name> and an empty, throwaway tree.
func (r *LocalRunner) runHook(ctx context.Context, n *plan.Node, in Inputs) (Result, error) {
	host, err := r.sandboxHost(ctx, n)
	if err != nil {
		return Result{}, err
	}
	if len(n.Command) == 0 {
		return Result{}, fmt.Errorf("hook has no command")
	}
	dir, err := r.st.MkdirTemp("hook-")
	if err != nil {
		return Result{}, err
	}
	defer r.st.Discard(dir)
	root, err := r.buildRoot(ctx, n, in)
	if err != nil {
		return Result{}, err
	}
	outputs := map[string]string{}
	for _, id := range n.Inputs.After {
		dep, ok := in[id]
		if !ok {
			continue // a cleanup hook after an output that failed
		}
		for name, desc := range dep.Outputs {
			p, err := r.artifactPath(ctx, desc, dep.Tree)
			if err != nil {
				return Result{}, fmt.Errorf("output %s: %w", name, err)
			}
			outputs[name] = p
		}
	}
	sde, env, err := epoch(n)
	if err != nil {
		return Result{}, err
	}
	treeDir := filepath.Join(dir, "tree")
	if err := os.Mkdir(treeDir, 0o755); err != nil {
		return Result{}, err
	}
	res, err := r.sandboxed(ctx, n, host, dir, sandbox.Spec{
		Root: root, Tree: treeDir, Outputs: outputs, Command: n.Command, Env: env, SourceDateEpoch: sde,
	})
	var exit *exitError
	if errors.As(err, &exit) && n.OnFailure == "warn" {
		ev := r.event(n, EventWarning)
		ev.Line = fmt.Sprintf("hook %s (%s) failed with exit status %d (on_failure: warn)", n.Name, n.Origin, exit.code)
		r.events.emit(ev)
		res.Warning = ev.Line
		return res, nil
	}
	return res, r.commandError(n, res, err)
}

// artifactPath returns a host path holding an output artifact for a hook to
// see read-only: the blob, or for tree and oci outputs a checkout of the tree.
func (r *LocalRunner) artifactPath(ctx context.Context, desc, tree ocispec.Descriptor) (string, error) {
	if desc.MediaType == output.MediaTypeTree || desc.MediaType == output.MediaTypeOCI {
		return r.st.Checkout(ctx, tree.Digest)
	}
	return r.st.BlobPath(desc.Digest)
}

// exitError is a command that exited with a non-zero status.
type exitError struct {
	code int
	tail string
}

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// commandError makes the error of a command n ran a *NodeError with its exit
// status and the end of its log, which sandboxed kept in res.
func (r *LocalRunner) commandError(n *plan.Node, res Result, err error) error {
	if err == nil {
		return nil
	}
	ne := &NodeError{Node: n.Name, ID: n.ID, Origin: n.Origin, ExitCode: -1, Err: err}
	var xe *exitError
	if errors.As(err, &xe) {
		ne.ExitCode, ne.Log, ne.Err = xe.code, xe.tail, nil
		if msg := builtinMessage(n, xe.tail); msg != "" {
			ne.Err = errors.New(msg)
		}
	} else if t, ok := err.(interface{ logTail() string }); ok {
		ne.Log = t.logTail()
	}
	return ne
}

// builtinMessage is the reason a built-in stage gave for failing, the last
// line its log ends with ("strata: ..."), so that the build's one line says
// why and not only "exit status 1"; "" for other stages.
func builtinMessage(n *plan.Node, tail string) string {
	if !isBuiltin(n.Type) || n.Type == "strata.run" { // strata.run's log is the user's command's
		return ""
	}
	tail = strings.TrimRight(tail, "\n")
	last := tail[strings.LastIndexByte(tail, '\n')+1:]
	msg, ok := strings.CutPrefix(last, "strata: ")
	if !ok {
		return ""
	}
	return msg
}

// sandboxed runs spec with the process's output captured as the node's log,
// which is stored whatever the outcome (Result.Log). A non-zero exit is an
// *exitError holding the log's tail.
func (r *LocalRunner) sandboxed(ctx context.Context, n *plan.Node, host *sandbox.Host, dir string, spec sandbox.Spec) (Result, error) {
	lw, err := newLogWriter(filepath.Join(dir, "log"), func(line string) {
		ev := r.event(n, EventLog)
		ev.Line = line
		r.events.emit(ev)
	})
	if err != nil {
		return Result{}, err
	}
	spec.Stdout, spec.Stderr, spec.MaxOutput = lw, lw, r.opts.MaxLogBytes
	r.applyLimits(n, &spec)
	code, runErr := sandbox.Run(ctx, host, spec)
	logD, size, tail, err := lw.finish(ctx, r.st)
	var res Result
	if logD != "" {
		res.Log = ocispec.Descriptor{MediaType: MediaTypeLog, Digest: logD, Size: size}
	}
	if runErr != nil {
		if errors.Is(runErr, sandbox.ErrSetup) {
			// The host may have changed under the cached probe results; and
			// builds do not probe bwrap by running it, so this may be the
			// first sign that it cannot work here.
			if p := r.hostCache(); p != "" {
				os.Remove(p)
			}
			runErr = fmt.Errorf("%w (see strata doctor)", runErr)
		}
		return res, &tailError{runErr, tail}
	}
	if err != nil {
		return res, fmt.Errorf("store log: %w", err)
	}
	if code != 0 {
		return res, &exitError{code, tail}
	}
	return res, nil
}

// tailError is an error of a sandboxed run with the end of its log.
type tailError struct {
	err  error
	tail string
}

func (e *tailError) Error() string   { return e.err.Error() }
func (e *tailError) Unwrap() error   { return e.err }
func (e *tailError) logTail() string { return e.tail }

// epoch returns the node's SOURCE_DATE_EPOCH and the rest of its environment.
func epoch(n *plan.Node) (int64, map[string]string, error) {
	var e int64
	env := map[string]string{}
	for k, v := range n.Env {
		if k == "SOURCE_DATE_EPOCH" {
			var err error
			if e, err = strconv.ParseInt(v, 10, 64); err != nil || e < 0 {
				return 0, nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a non-negative integer", v)
			}
			continue
		}
		env[k] = v
	}
	return e, env, nil
}

// logWriter keeps a node's complete output in a file, reports it line by line
// as events and remembers the last lines for errors.
type logWriter struct {
	f       *os.File
	emit    func(line string)
	partial []byte
	tail    []string
}

const maxEventLine = 4096

func newLogWriter(path string, emit func(string)) (*logWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &logWriter{f: f, emit: emit}, nil
}

func (l *logWriter) Write(p []byte) (int, error) {
	n, err := l.f.Write(p)
	if err != nil {
		return n, err
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			if len(l.partial) > maxEventLine {
				l.line(l.partial)
				l.partial = l.partial[:0]
			}
			break
		}
		l.line(append(l.partial, p[:i]...))
		l.partial = l.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (l *logWriter) line(b []byte) {
	if len(b) > maxEventLine {
		b = b[:maxEventLine]
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	l.tail = append(l.tail, s)
	if len(l.tail) > 2*LogTailLines {
		l.tail = append(l.tail[:0], l.tail[len(l.tail)-LogTailLines:]...)
	}
	if l.emit != nil {
		l.emit(s)
	}
}

// finish flushes a last unterminated line, stores the log as a blob and returns
// its digest, size and tail.
func (l *logWriter) finish(ctx context.Context, st *store.Store) (digest.Digest, int64, string, error) {
	if len(l.partial) > 0 {
		l.line(l.partial)
		l.partial = nil
	}
	tail := l.tail
	if len(tail) > LogTailLines {
		tail = tail[len(tail)-LogTailLines:]
	}
	defer l.f.Close()
	if _, err := l.f.Seek(0, io.SeekStart); err != nil {
		return "", 0, strings.Join(tail, "\n"), err
	}
	d, size, err := st.PutBlob(ctx, l.f)
	return d, size, strings.Join(tail, "\n"), err
}
