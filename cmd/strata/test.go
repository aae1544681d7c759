package main

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
)

type testFlags struct {
	build buildFlags
	junit string
}

func newTestCmd(g *globals) *cobra.Command {
	var f testFlags
	cmd := &cobra.Command{
		Use:   "test [plan.json|DIR] [JOB...] [--junit FILE]",
		Short: "Run jobs (tests, checks, probes) and report each",
		Long: `test runs the workspace's jobs (all of them, or the JOBs named: jobs.NAME or
NAME) with everything they need, and reports each job: passed, failed or
skipped (a job whose dependency failed), its time and, for a failure, the end of
its log. A job that passed before with the same key is not run again: its
result comes from the cache, as a build's stages do (strata logs JOB shows its
log). --junit FILE also writes the report as JUnit XML, for CI systems.
Exit status 1 when a job failed.`,
		Example: `  strata test
  strata test jobs.optical/read_sr0 --junit report.xml
  strata --output json test | jq '.jobs[] | select(.status == "failed")'`,
		RunE: func(cmd *cobra.Command, a []string) error {
			return runTest(cmd.Context(), g, f, a)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.junit, "junit", "", "also write the report as JUnit XML to FILE")
	fl.IntVarP(&f.build.jobs, "jobs", "j", 0, "nodes to run at once; 0 means one per CPU")
	fl.BoolVar(&f.build.keepGoing, "keep-going", true, "run the jobs that do not depend on a failed one")
	fl.DurationVar(&f.build.timeout, "timeout", 0, "cap on every job's and stage's run time")
	return cmd
}

// jobReport is one job's outcome.
type jobReport struct {
	Name    string            `json:"name"`
	Status  string            `json:"status"` // passed, failed, skipped
	Cached  bool              `json:"cached"`
	Elapsed executor.Duration `json:"elapsed"`
	Origin  string            `json:"origin"`
	Error   string            `json:"error,omitempty"`
	Log     string            `json:"log,omitempty"`
}

func runTest(ctx context.Context, g *globals, f testFlags, args []string) error {
	if err := checkRunFlags(f.build); err != nil {
		return err
	}
	g.building = true
	started := time.Now()
	v, rest, err := g.loadPlan(ctx, args)
	if err != nil {
		return err
	}
	st, err := g.openStore()
	if err != nil {
		return err
	}
	bin, err := strataBinary()
	if err != nil {
		return err
	}
	opts := executor.Options{
		Store: st, Binary: bin, Jobs: f.build.jobs, KeepGoing: f.build.keepGoing, Timeout: f.build.timeout,
		Workspace: g.dir, OutDir: f.build.outDir,
	}
	// The jobs of templates that wait on resource jobs exist once those ran.
	// When a resource job fails, its failure is the report.
	var res, first *executor.BuildResult
	if planFromFile(args, rest) {
		g.notePending(v.Plan().Pending, "a plan file keeps %s pending (strata test DIR runs the jobs first)")
	} else if needsInstances(v.Plan(), rest) && !allJobs(v.Plan(), rest) {
		r := newRenderer(g)
		opts.Events = r.event
		ev, resourceRes, xerr := g.expandPlan(ctx, v, opts)
		r.close()
		switch {
		case ev == nil && resourceRes != nil: // a resource job failed
			res, err = resourceRes, xerr
		case xerr != nil:
			return signalExit(ctx, xerr)
		default:
			v, first = ev, resourceRes
		}
	}
	p := v.Plan()
	var jobs []*plan.Node
	for _, n := range p.Nodes {
		if n.Kind == plan.KindJob {
			jobs = append(jobs, n)
		}
	}
	if len(rest) > 0 && res == nil {
		jobs = jobs[:0]
		for _, name := range rest {
			n, ok := p.Node(name)
			if !ok {
				n, ok = p.Node("jobs." + name)
			}
			if !ok || n.Kind != plan.KindJob {
				return &usageError{fmt.Errorf("%w %q: not a job (%s)", executor.ErrUnknownTarget, name, strings.Join(jobNames(p), ", "))}
			}
			jobs = append(jobs, n)
		}
	}
	if len(jobs) == 0 {
		return &usageError{errors.New("test: the workspace has no jobs")}
	}
	if res == nil {
		for _, n := range jobs {
			opts.Targets = append(opts.Targets, n.ID)
		}
		r := newRenderer(g)
		opts.Events = r.event
		res, err = executor.Build(ctx, v, opts)
		r.close()
		if res != nil {
			mergeRounds(first, res, v.Plan())
		}
	}
	if res == nil {
		return signalExit(ctx, err)
	}
	byID := map[string]*executor.NodeResult{}
	for _, nr := range res.Nodes {
		byID[nr.ID] = nr
	}
	failures := map[string]*executor.NodeError{}
	var be *executor.BuildError
	if errors.As(err, &be) {
		for _, ne := range be.Failed {
			failures[ne.ID] = ne
		}
	}
	var reports []jobReport
	failed := 0
	for _, n := range jobs {
		nr := byID[n.ID]
		rep := jobReport{Name: n.Name, Origin: n.Origin}
		if nr != nil {
			rep.Elapsed, rep.Cached = nr.Elapsed, nr.Status == executor.StatusCached
		}
		switch {
		case nr == nil || nr.Status == executor.StatusSkipped:
			rep.Status = "skipped"
			if nr != nil {
				rep.Error = nr.Reason
			}
		case nr.Status == executor.StatusFailed:
			rep.Status = "failed"
			failed++
			if ne := failures[n.ID]; ne != nil {
				rep.Error = ne.Error()
			}
		default:
			rep.Status = "passed"
		}
		if d, lerr := executor.NodeLog(ctx, st, n); lerr == nil {
			if b, rerr := st.ReadBlob(ctx, d); rerr == nil {
				rep.Log = string(b)
			}
		}
		reports = append(reports, rep)
	}
	if f.junit != "" {
		if werr := writeJUnitFile(f.junit, reports, time.Since(started)); werr != nil {
			return werr
		}
	}
	if g.json() {
		if werr := writeJSON(g.stdout, map[string]any{"ok": err == nil && failed == 0, "jobs": reports, "elapsed": executor.Duration(time.Since(started))}); werr != nil {
			return werr
		}
	} else {
		for _, rep := range reports {
			line := fmt.Sprintf("%-7s %s (%.2fs)", rep.Status, terminalSafe(rep.Name), rep.Elapsed.Seconds())
			if rep.Cached {
				line += " cached"
			}
			fmt.Fprintln(g.stdout, line)
			if rep.Status != "passed" && rep.Error != "" {
				fmt.Fprintln(g.stdout, "        "+strings.ReplaceAll(terminalSafeLines(rep.Error), "\n", "\n        "))
			}
		}
		fmt.Fprintf(g.stderr, "strata: %d jobs: %d passed, %d failed, %d skipped in %.2fs\n",
			len(reports), count(reports, "passed"), failed, count(reports, "skipped"), time.Since(started).Seconds())
	}
	if err == nil && failed == 0 {
		return nil
	}
	if ctx.Err() != nil {
		return signalExit(ctx, err)
	}
	return &reportedError{code: exitFailed, err: fmt.Errorf("test: %d of %d jobs failed", failed, len(reports))}
}

// allJobs reports whether every name (jobs.NAME or NAME) is a job of p: then
// strata test needs no template instance.
func allJobs(p *plan.Plan, names []string) bool {
	for _, name := range names {
		n, ok := p.Node(name)
		if !ok {
			n, ok = p.Node("jobs." + name)
		}
		if !ok || n.Kind != plan.KindJob {
			return false
		}
	}
	return len(names) > 0
}

func count(reports []jobReport, status string) int {
	n := 0
	for _, r := range reports {
		if r.Status == status {
			n++
		}
	}
	return n
}

func jobNames(p *plan.Plan) []string {
	var out []string
	for _, n := range p.Nodes {
		if n.Kind == plan.KindJob {
			out = append(out, n.Name)
		}
	}
	return out
}

// JUnit XML, as Jenkins, GitLab and GitHub read it.
type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	File      string        `xml:"file,attr,omitempty"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

func writeJUnit(w io.Writer, reports []jobReport, elapsed time.Duration) error {
	s := junitSuite{Name: "strata", Tests: len(reports), Time: fmt.Sprintf("%.3f", elapsed.Seconds())}
	for _, r := range reports {
		c := junitCase{Name: r.Name, Classname: "strata.jobs", File: r.Origin, Time: fmt.Sprintf("%.3f", r.Elapsed.Seconds()), SystemOut: xmlText(r.Log)}
		switch r.Status {
		case "failed":
			s.Failures++
			first, _, _ := strings.Cut(r.Error, "\n")
			c.Failure = &junitMessage{Message: xmlText(first), Text: xmlText(r.Error)}
		case "skipped":
			s.Skipped++
			c.Skipped = &junitMessage{Message: xmlText(r.Error)}
		}
		s.Cases = append(s.Cases, c)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(junitSuites{Suites: []junitSuite{s}}); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// xmlText drops what XML 1.0 cannot hold (most control characters, invalid
// UTF-8): a job's log is arbitrary bytes.
func xmlText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return r
		case r < 0x20 || r == 0xFFFD || r >= 0xFFFE && r <= 0xFFFF:
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
}

func writeJUnitFile(path string, reports []jobReport, elapsed time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("junit: %w", err)
	}
	if err := writeJUnit(f, reports, elapsed); err != nil {
		f.Close()
		return fmt.Errorf("junit: %w", err)
	}
	return f.Close()
}
