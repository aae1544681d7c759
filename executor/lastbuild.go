package executor

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/strata-build/strata/executor/store"
)

// A build record is what a successful build leaves in the store (state
// "builds", one file per workspace, out directory and targets) so that the
// next build of the same plan (the same bytes: Options.PlanDigest) can tell
// that it has nothing to do without decoding, verifying and walking the
// plan: ninja's log, for a no-op build that costs a millisecond per node
// otherwise. It holds the result, the identity of every action record the
// result was read from or written to (taken then, not after) and which
// images were exported whole. UpToDate trusts it only while every one of
// those records is the same file, every blob is there and every export is
// as strata wrote it; anything else, and the caller builds as usual.
// docs/decisions.md has the reasoning.
type buildRecord struct {
	Format    int                 `json:"format"`
	Plan      digest.Digest       `json:"plan"`
	Workspace string              `json:"workspace"`
	OutDir    string              `json:"out_dir"`
	Targets   []string            `json:"targets"`
	Result    *BuildResult        `json:"result"`
	Actions   []store.ActionStamp `json:"actions"`
	Whole     []string            `json:"whole"` // images exported whole
}

const (
	buildRecordFormat = 2
	buildRecordState  = "builds"
	// maxBuildRecords bounds the records kept: one per workspace, out
	// directory and target list built, the least recent removed beyond it.
	maxBuildRecords = 64
)

// recordPath is the record of the build opts describe (with defaults
// applied), and that build's identity.
func recordPath(st *store.Store, opts Options) (string, *buildRecord, error) {
	ws, err := filepath.Abs(opts.Workspace)
	if err != nil {
		return "", nil, err
	}
	out := opts.OutDir
	if out == "" {
		out = filepath.Join(ws, "out")
	}
	if out, err = filepath.Abs(out); err != nil {
		return "", nil, err
	}
	dir, err := st.StateDir(buildRecordState)
	if err != nil {
		return "", nil, err
	}
	targets := slices.Clone(opts.Targets)
	if targets == nil {
		targets = []string{}
	}
	id, _ := json.Marshal([]any{ws, out, targets})
	sum := sha256.Sum256(id)
	r := &buildRecord{Format: buildRecordFormat, Plan: opts.PlanDigest, Workspace: ws, OutDir: out, Targets: targets}
	return filepath.Join(dir, hex.EncodeToString(sum[:])+".json"), r, nil
}

// recordable reports whether a build with opts can be answered from a
// record: one over the local store alone that publishes nothing.
func recordable(opts Options) bool {
	return opts.PlanDigest != "" && opts.Cache == nil && opts.Publisher == nil && opts.Runner == nil
}

// writeBuildRecord records res, the result of a build of the nodes done
// that succeeded, when the next identical build could be answered from it:
// every node built or found in the cache (or a publish node a build skips),
// no warning shown (a cached result's warning is shown again by every
// build), no cleanup hook (those run every time) and no node with
// requirements (a build checks them against the host before anything else,
// and the host may have changed). Failing to write it only costs the next
// build its shortcut; it is not synced, like a lease: a torn record reads as
// none.
func writeBuildRecord(ctx context.Context, opts Options, res *BuildResult, done []*task, whole []string, warned, requires bool) {
	if !recordable(opts) || warned || requires || len(res.Stale) > 0 {
		return
	}
	p, rec, err := recordPath(opts.Store, opts)
	if err != nil {
		return
	}
	for _, t := range done {
		switch n := t.res; {
		case isCleanup(t.n), isPreBuild(t.n):
			return // steps of every build: none is answered from a record
		case n.Status == StatusSkipped && n.Reason == ErrNotImplemented.Error():
			continue
		case n.Status != StatusBuilt && n.Status != StatusCached:
			return
		}
		a := t.result.record
		if a.Key != t.n.ID || a.Birth == 0 {
			// Not from the local store, or from a filesystem that keeps no
			// birth times (NFS): there an inode freed by a removed record
			// can come back as a new record of the same size, and the
			// stamp would not tell them apart.
			return
		}
		rec.Actions = append(rec.Actions, a)
	}
	rec.Result, rec.Whole = res, whole
	b, err := json.Marshal(rec)
	if err != nil || ctx.Err() != nil {
		return
	}
	tmp := p + tmpMark + rand.Text()
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return
	}
	pruneBuildRecords(filepath.Dir(p))
}

// tmpMark marks a record being written; one a killed strata left is removed
// by the next prune that finds it an hour old.
const tmpMark = ".tmp-"

// pruneBuildRecords keeps the maxBuildRecords most recently used records,
// and removes temporary ones an hour old.
func pruneBuildRecords(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type rec struct {
		name string
		mod  time.Time
	}
	var recs []rec
	for _, e := range entries {
		info, err := e.Info()
		switch {
		case err != nil:
		case strings.Contains(e.Name(), tmpMark):
			if time.Since(info.ModTime()) > time.Hour {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		default:
			recs = append(recs, rec{e.Name(), info.ModTime()})
		}
	}
	if len(recs) <= maxBuildRecords {
		return
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].mod.After(recs[j].mod) })
	for _, r := range recs[maxBuildRecords:] {
		os.Remove(filepath.Join(dir, r.name))
	}
}

// UpToDate answers a build from the record its last success left (see
// buildRecord), when nothing it depends on changed since: the same plan
// (opts.PlanDigest), workspace, out directory and targets, every action record
// and blob the result came from, and every export as strata wrote it. It
// then reports every node cached through opts.Events, as a build that finds
// everything in the cache does, and returns that build's result. Otherwise
// it returns false, having changed nothing but the records' use times (and
// made the out directory if it was missing), and the caller builds.
func UpToDate(ctx context.Context, opts Options) (*BuildResult, bool) {
	if opts.Store == nil || !recordable(opts) {
		return nil, false
	}
	opts = opts.withDefaults()
	p, want, err := recordPath(opts.Store, opts)
	if err != nil {
		return nil, false
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, false
	}
	var rec buildRecord
	if json.Unmarshal(b, &rec) != nil || rec.Result == nil || rec.Format != want.Format ||
		rec.Plan != want.Plan || rec.Workspace != want.Workspace || rec.OutDir != want.OutDir ||
		!slices.Equal(rec.Targets, want.Targets) {
		return nil, false
	}
	var blobs []digest.Digest
	for _, n := range rec.Result.Nodes {
		if n == nil {
			return nil, false
		}
		for _, d := range append([]digest.Digest{n.Tree, n.Log}, slices.Collect(maps.Values(n.Outputs))...) {
			if d != "" {
				blobs = append(blobs, d)
			}
		}
	}
	if !checkAll(ctx, opts, &rec, blobs) {
		return nil, false
	}
	// Used now: pruning keeps the records used most recently.
	if info, err := os.Stat(p); err == nil && time.Since(info.ModTime()) > time.Minute {
		now := time.Now()
		os.Chtimes(p, now, now)
	}
	res := &BuildResult{OutDir: rec.Result.OutDir}
	for _, a := range rec.Result.Artifacts {
		a.State = ArtifactCurrent
		res.Artifacts = append(res.Artifacts, a)
	}
	ev := &emitter{fn: opts.Events, total: len(rec.Result.Nodes)}
	for _, n := range rec.Result.Nodes {
		ev.emit(Event{Node: n.ID, Name: n.Name, NodeKind: n.Kind, Type: n.Type, Kind: EventQueued})
	}
	for _, n := range rec.Result.Nodes {
		r := *n
		r.Elapsed = 0
		e := Event{Node: n.ID, Name: n.Name, NodeKind: n.Kind, Type: n.Type, Kind: EventCached}
		if r.Status == StatusSkipped {
			e.Kind, e.Err = EventSkipped, ErrNotImplemented
			res.Skipped++
		} else {
			r.Status = StatusCached
			res.Cached++
		}
		res.Nodes = append(res.Nodes, &r)
		ev.emit(e)
	}
	return res, true
}

// checkAll reports whether the store still holds every action record and
// blob of rec (see store.Unchanged) and the out directory every artifact of
// rec as strata exported it, with nothing else in the images exported whole.
// The checks run opts.Jobs at a time, as a build's exports do, and stop at
// the first that fails.
func checkAll(ctx context.Context, opts Options, rec *buildRecord, blobs []digest.Digest) bool {
	var x *exporter
	if len(rec.Result.Artifacts) > 0 {
		root, dir, err := openOutDir(opts.Workspace, opts.OutDir)
		if err != nil {
			return false
		}
		x = &exporter{st: opts.Store, root: root, euid: os.Geteuid()}
		defer x.close()
		if abs, err := filepath.Abs(dir); err != nil || abs != rec.OutDir || dir != rec.Result.OutDir {
			return false
		}
	}
	want := map[string]map[string]digest.Digest{}
	for _, a := range rec.Result.Artifacts {
		if want[a.Image] == nil {
			want[a.Image] = map[string]digest.Digest{}
		}
		want[a.Image][a.Name] = a.Digest
	}
	checks := []func() bool{func() bool { return opts.Store.Unchanged(ctx, rec.Actions, blobs) }}
	for _, image := range sortedImages(want) {
		items, whole := want[image], slices.Contains(rec.Whole, image)
		checks = append(checks, func() bool {
			c := x.check(image, items)
			if whole {
				return c.whole
			}
			for name := range items {
				if !c.current[name] {
					return false
				}
			}
			return true
		})
	}
	var failed atomic.Bool
	var g errgroup.Group
	g.SetLimit(max(opts.Jobs, 1))
	for _, check := range checks {
		g.Go(func() error {
			if !failed.Load() && ctx.Err() == nil && !check() {
				failed.Store(true)
			}
			return nil
		})
	}
	g.Wait()
	return !failed.Load() && ctx.Err() == nil
}
