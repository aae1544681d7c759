package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/lang"
)

// recordingRunner runs nodes through a LocalRunner and records every call.
type recordingRunner struct {
	inner executor.Runner
	mu    sync.Mutex
	calls map[string]int
	bad   []string
}

func (r *recordingRunner) Run(ctx context.Context, vn plan.VerifiedNode, in executor.Inputs) (executor.Result, error) {
	n := vn.Node()
	r.mu.Lock()
	r.calls[n.Name]++
	for id, res := range in {
		if !validDesc(res.Tree, true) || !validDesc(res.Log, true) {
			r.bad = append(r.bad, fmt.Sprintf("%s ← %s: %+v", n.Name, id, res))
		}
		for _, o := range res.Outputs {
			if !validDesc(o, false) {
				r.bad = append(r.bad, n.Name+" ← "+id)
			}
		}
	}
	r.mu.Unlock()
	return r.inner.Run(ctx, vn, in)
}

// validDesc reports whether d is a content descriptor (or absent, when
// optional): a digest, a size and a media type, nothing else.
func validDesc(d ocispec.Descriptor, optional bool) bool {
	if d.Digest == "" {
		return optional
	}
	sized := d.Size > 0 || d.Size == 0 && d.Digest == digest.FromBytes(nil)
	return d.Digest.Validate() == nil && d.Digest.Algorithm() == digest.SHA256 && sized && d.MediaType != "" && d.URLs == nil
}

// TestLibraryBuildsFleetExec builds examples/fleet through the public library
// (lang.Load, compiler.Compile, plan.Verify, executor.Build) with a runner that
// records every call: each node runs once, and what it is given of its
// dependencies is content descriptors only. A second build runs nothing but
// the cleanup hooks.
func TestLibraryBuildsFleetExec(t *testing.T) {
	ctx := context.Background()
	ws, err := lang.Load(ctx, filepath.Join("..", "..", "examples", "fleet"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := compiler.Compile(ctx, ws, compiler.Options{StrataVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := plan.Verify(p, plan.VerifyOptions{Host: plan.HostFingerprint("test")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	opts := executor.Options{Store: st, Binary: strataBin(t), Workspace: filepath.Join("..", "..", "examples", "fleet"), OutDir: t.TempDir()}
	inner, err := executor.NewLocalRunner(opts)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingRunner{inner: inner, calls: map[string]int{}}
	opts.Runner = rec
	res, err := executor.Build(ctx, v, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range p.Nodes {
		want := 1
		if n.Kind == plan.KindPublish {
			want = 0 // not a runner's work: the registry's
		}
		if rec.calls[n.Name] != want {
			t.Errorf("%s ran %d times, want %d", n.Name, rec.calls[n.Name], want)
		}
	}
	if len(rec.bad) > 0 {
		t.Errorf("inputs that are not content descriptors: %v", rec.bad)
	}
	if res.Built == 0 || len(res.Artifacts) == 0 {
		t.Errorf("built %d nodes, %d artifacts", res.Built, len(res.Artifacts))
	}
	rec.calls = map[string]int{}
	if _, err := executor.Build(ctx, v, opts); err != nil {
		t.Fatal(err)
	}
	for name := range rec.calls {
		// Cleanup hooks release what a build took: they run every time.
		if n, _ := p.Node(name); n == nil || n.Type != "cleanup" {
			t.Errorf("a second build ran %s", name)
		}
	}
}
