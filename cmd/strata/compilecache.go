package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/strata-build/strata/compiler/compilecache"
	"github.com/strata-build/strata/compiler/plan"
	schema "github.com/strata-build/strata/cue"
	"github.com/strata-build/strata/lang"
)

// storeDir is the store directory: --cache-dir, else $STRATA_CACHE_DIR, else
// $XDG_CACHE_HOME/strata, else ~/.cache/strata (os.UserCacheDir's rules), else
// (no HOME: a service, an init script) strata-cache-<uid> in the temporary
// directory, which the store refuses if another user got there first.
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
	return filepath.Join(os.TempDir(), "strata-cache-"+strconv.Itoa(os.Geteuid()))
}

// cachedCompile returns the workspace's plan, from the compile cache when no input
// has changed since the last compile, and warns (once, hit or miss) when images
// build in the host's /usr.
func (g *globals) cachedCompile(ctx context.Context) (*plan.Plan, error) {
	c, err := g.compileEncoded(ctx, true, nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return g.warnedPlan(ctx, c)
}

// warnedPlan returns c's plan, decoding a hit, and warns when its images
// build in the host's /usr.
func (g *globals) warnedPlan(ctx context.Context, c *compilecache.Compiled) (*plan.Plan, error) {
	p, err := c.Decoded(ctx, g.compileFunc(nil), g.debug)
	if err == nil {
		g.warnHostRoot(c.HostRoot)
	}
	return p, err
}

// warnHostRoot prints one warning naming the images whose stages run in the
// host's /usr. The compile cache keeps them, so a hit warns as a compile does.
func (g *globals) warnHostRoot(h compilecache.HostRoot) {
	if g.json() || h.Count == 0 {
		return
	}
	fmt.Fprintf(g.stderr, "warning: %s: %s\n", h.Origin, lang.NonHermeticMsg(h.Images, h.Count))
}

// cachedPlan is cachedCompile without the warning. With records (the
// resource jobs' records, lang.WithJobRecords) it is the expanded plan, the
// cache keyed by them too.
func (g *globals) cachedPlan(ctx context.Context, records map[string][]byte) (*plan.Plan, error) {
	c, err := g.compileEncoded(ctx, true, records)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Decoded(ctx, g.compileFunc(records), g.debug)
}

// compileEncoded returns the workspace's plan encoded, from the compile cache when
// useCache is set and no input has changed (compilecache.Compile). On a hit the
// plan is not decoded: strata compile copies the stored bytes to its output.
func (g *globals) compileEncoded(ctx context.Context, useCache bool, records map[string][]byte) (*compilecache.Compiled, error) {
	// A bad limit is refused on a cache hit too, not only when CUE runs.
	if _, _, err := evalLimits(); err != nil {
		return nil, err
	}
	var cache *compilecache.Cache
	if useCache {
		cache = g.compileCache()
	}
	in := g.compileCacheInputs()
	in.Records = records
	return compilecache.Compile(ctx, cache, g.dir, in, g.compileFunc(records), g.debug)
}

// compileCache returns the compile cache, kept in the store's state directory
// "compile", or nil when the store cannot give one: the cache is an
// optimisation, so that only costs a compile.
func (g *globals) compileCache() *compilecache.Cache {
	st, err := g.openStore()
	if err != nil {
		g.debugf("compile cache: %v", err)
		return nil
	}
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

func (g *globals) debug(s string) { g.debugf("%s", s) }

func (g *globals) debugf(format string, a ...any) {
	if g.verbose {
		fmt.Fprintf(g.stderr, "strata: "+format+"\n", a...)
	}
}
