package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/strata-build/strata/compiler/compilecache"
	"github.com/strata-build/strata/compiler/plan"
	schema "github.com/strata-build/strata/cue"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/lang"
)

// storeDir is the store directory: --cache-dir, else $STRATA_CACHE_DIR, else
// $XDG_CACHE_HOME/strata, else ~/.cache/strata (os.UserCacheDir's rules).
func (g *globals) storeDir() string {
	if g.cacheDir != "" {
		return g.cacheDir
	}
	if d := os.Getenv("STRATA_CACHE_DIR"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "strata")
	}
	return filepath.Join(os.TempDir(), "strata-cache")
}

// compiledPlan is a compile's result: the plan compiled in this process, or a
// compile-cache hit whose stored bytes are copied to the output undecoded.
type compiledPlan struct {
	plan    *plan.Plan // on a miss
	encoded []byte     // on a miss: exactly what plan.Encode writes
	hit     *compilecache.Hit
	nodes   int
	// pending are the plan's templates that wait on resource jobs.
	pending []plan.Pending
}

// writeTo writes the encoded plan to w.
func (c *compiledPlan) writeTo(w io.Writer) error {
	if c.hit != nil {
		_, err := c.hit.WriteTo(w)
		return err
	}
	_, err := w.Write(c.encoded)
	return err
}

// close releases a cache hit's entry.
func (c *compiledPlan) close() {
	if c.hit != nil {
		c.hit.Close()
	}
}

// cachedCompile returns the workspace's plan, from the compile cache when no input
// has changed since the last compile, and warns (once, hit or miss) when images
// build in the host's /usr.
func (g *globals) cachedCompile(ctx context.Context) (*plan.Plan, error) {
	p, err := g.cachedPlan(ctx)
	if err == nil {
		g.warnHostRoot(p)
	}
	return p, err
}

// warnHostRoot prints one warning naming the images whose stages run in the
// host's /usr. It reads the plan, so a compile-cache hit warns as a compile does.
func (g *globals) warnHostRoot(p *plan.Plan) {
	if g.json() {
		return
	}
	set := map[string]bool{}
	for _, n := range p.Nodes {
		if n.Kind != plan.KindStage || n.Inputs.BuildRoot != plan.HostRoot {
			continue
		}
		names := []string{n.Name}
		for _, a := range n.Aliases {
			names = append(names, a.Name)
		}
		for _, name := range names {
			if i := strings.LastIndex(name, ".stages["); i > 0 && strings.HasPrefix(name, "images.") {
				set[name[:i]] = true
			}
		}
	}
	if len(set) == 0 {
		return
	}
	images := sortedNames(set)
	origin := "-"
	if img := p.Images[strings.TrimPrefix(images[0], "images.")]; img != nil {
		origin = img.Origin
	}
	fmt.Fprintf(g.stderr, "warning: %s: %s\n", origin, lang.NonHermeticMsg(images))
}

// cachedPlan is cachedCompile without the warning.
func (g *globals) cachedPlan(ctx context.Context) (*plan.Plan, error) {
	c, err := g.compileEncoded(ctx, true)
	if err != nil {
		return nil, err
	}
	defer c.close()
	if c.plan != nil {
		return c.plan, nil
	}
	b, err := c.hit.Bytes()
	if err != nil {
		// Damaged after all (its checksum): compile.
		return g.compileWorkspace(ctx)
	}
	p, err := plan.Decode(bytes.NewReader(b))
	if err != nil {
		// A stored plan the decoder rejects: compile, so the user sees what a
		// compile without the cache would say.
		g.debugf("compile cache: %v", err)
		return g.compileWorkspace(ctx)
	}
	return p, nil
}

// compileEncoded returns the workspace's plan encoded, from the compile cache when
// useCache is set and no input has changed. On a hit the plan is not decoded:
// `strata compile` copies the stored bytes to its output.
func (g *globals) compileEncoded(ctx context.Context, useCache bool) (*compiledPlan, error) {
	// A bad limit is refused on a cache hit too, not only when CUE runs.
	if _, _, err := evalLimits(); err != nil {
		return nil, err
	}
	var (
		cache *compilecache.Cache
		key   string
	)
	if useCache {
		// Not a workspace, or unreadable (an error here): let the loader say
		// what is wrong.
		var err error
		if key, err = compilecache.Key(g.dir, g.compileCacheInputs()); err == nil {
			cache = g.compileCache()
		}
		if cache != nil {
			if h, ok := cache.Open(ctx, key, g.dir); ok {
				g.debugf("compile cache hit %s", key[:12])
				return &compiledPlan{hit: h, nodes: h.Nodes, pending: h.Pending}, nil
			}
		}
	}
	p, err := g.compileWorkspace(ctx)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := p.Encode(&buf); err != nil {
		return nil, err
	}
	c := &compiledPlan{plan: p, encoded: buf.Bytes(), nodes: len(p.Nodes), pending: p.Pending}
	if cache != nil {
		e := &compilecache.Entry{Plan: c.encoded, Nodes: c.nodes, Paths: compilecache.PathSources(p), Pending: p.Pending}
		if err := cache.Put(key, e); err != nil {
			// The cache is an optimisation: failing to fill it never fails a compile.
			g.debugf("%v", err)
		} else {
			g.debugf("compile cache store %s", key[:12])
		}
	}
	return c, nil
}

// compileCache returns the compile cache, kept in the store's state directory
// "compile", or nil when the store cannot give one: the cache is an
// optimisation, so that only costs a compile.
func (g *globals) compileCache() *compilecache.Cache {
	st, err := store.Open(g.storeDir())
	if err != nil {
		g.debugf("compile cache: %v", err)
		return nil
	}
	defer st.Close()
	dir, err := st.StateDir("compile")
	if err != nil {
		g.debugf("compile cache: %v", err)
		return nil
	}
	return compilecache.New(dir)
}

// compileCacheInputs are the compile's inputs besides the workspace's files.
func (g *globals) compileCacheInputs() compilecache.Inputs {
	v := strataVersion()
	in := compilecache.Inputs{
		StrataVersion: v,
		Host:          plan.HostFingerprint(v),
		Schema:        schema.Schema,
	}
	if exe, err := os.Executable(); err == nil {
		if info, err := os.Stat(exe); err == nil {
			in.Binary = fmt.Sprintf("%d %d", info.Size(), info.ModTime().UnixNano())
		}
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CUE_") {
			in.Env = append(in.Env, kv)
		}
	}
	return in
}

func (g *globals) debugf(format string, a ...any) {
	if g.verbose {
		fmt.Fprintf(g.stderr, "strata: "+format+"\n", a...)
	}
}
