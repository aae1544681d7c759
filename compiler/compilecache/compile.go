package compilecache

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	"github.com/strata-build/strata/compiler/plan"
)

// Compiled is a compile's result: the plan compiled in this process, or a
// cache hit whose stored bytes are copied out undecoded (strata compile -o).
type Compiled struct {
	// Plan is set on a miss, and encoded holds exactly what Plan.Encode
	// writes for it, as the cache stores it.
	Plan    *plan.Plan
	encoded []byte
	// Hit is set on a hit; Close releases it.
	Hit *Hit
	// Nodes counts the plan's nodes; Pending are its templates that wait on
	// resource jobs; HostRoot its images that build in the host's /usr.
	Nodes    int
	Pending  []plan.Pending
	HostRoot HostRoot
	// PlanDigest is the SHA-256 of the encoded plan, which names the plan
	// without decoding a hit.
	PlanDigest digest.Digest
}

// WriteTo writes the plan to w as Plan.Encode does.
func (c *Compiled) WriteTo(w io.Writer) (int64, error) {
	if c.Hit != nil {
		return c.Hit.WriteTo(w)
	}
	n, err := w.Write(c.encoded)
	return int64(n), err
}

// Close releases a hit's entry.
func (c *Compiled) Close() {
	if c.Hit != nil {
		c.Hit.Close()
	}
}

// Compile returns the plan of the workspace dir: from the cache when no input
// (the workspace's files, in) changed since a compile stored it, else from
// compile, whose result it stores. A nil cache, or a workspace it cannot key
// (compile then says what is wrong), always compiles. Failing to fill the
// cache never fails a compile: it is reported through debug, which may be
// nil.
func Compile(ctx context.Context, c *Cache, dir string, in Inputs, compile func(context.Context) (*plan.Plan, error), debug func(string)) (*Compiled, error) {
	say := func(format string, a ...any) {
		if debug != nil {
			debug(fmt.Sprintf(format, a...))
		}
	}
	var key string
	if c != nil {
		var err error
		if key, err = Key(dir, in); err != nil {
			c = nil
		} else if h, ok := c.Open(ctx, key, dir); ok {
			say("compile cache hit %s", key[:12])
			return &Compiled{Hit: h, Nodes: h.Nodes, Pending: h.Pending, HostRoot: h.HostRoot, PlanDigest: h.PlanDigest}, nil
		}
	}
	p, err := compile(ctx)
	if err != nil {
		return nil, err
	}
	// Indented, as strata compile writes it: a hit is then copied out as it
	// is (a 40 MB plan at N = 3000: indenting a compact entry took 0.3 s of
	// a 50 ms budget), for ~15% more bytes for builds to decode.
	var buf bytes.Buffer
	if err := p.Encode(&buf); err != nil { // its newline ends the plan "}\n", as an entry's must (see open)
		return nil, err
	}
	out := &Compiled{Plan: p, encoded: buf.Bytes(), Nodes: len(p.Nodes), Pending: p.Pending, HostRoot: HostRootOf(p),
		PlanDigest: digest.FromBytes(buf.Bytes())}
	if c != nil {
		// The compiler read the files after Key did: one edited meanwhile
		// would file this plan under the key of the content before the
		// edit, and a later hit on that content would return a plan of
		// other sources. Such a compile is not stored.
		if again, err := Key(dir, in); err != nil || again != key {
			say("compile cache: the workspace changed while it compiled; not stored")
			return out, nil
		}
		e := &Entry{Plan: out.encoded, Nodes: out.Nodes, Paths: PathSources(p), Pending: p.Pending, HostRoot: out.HostRoot, PlanDigest: out.PlanDigest}
		if err := c.Put(key, e); err != nil {
			say("%v", err)
		} else {
			say("compile cache store %s", key[:12])
		}
	}
	return out, nil
}

// Decoded returns the plan of c, decoding a hit. A hit that turns out
// damaged or that the decoder rejects is compiled again with compile, so the
// user sees what a compile without the cache would say.
func (c *Compiled) Decoded(ctx context.Context, compile func(context.Context) (*plan.Plan, error), debug func(string)) (*plan.Plan, error) {
	if c.Plan != nil {
		return c.Plan, nil
	}
	b, err := c.Hit.Bytes()
	if err != nil {
		return compile(ctx)
	}
	p, err := plan.Decode(bytes.NewReader(b))
	if err != nil {
		if debug != nil {
			debug(fmt.Sprintf("compile cache: %v", err))
		}
		return compile(ctx)
	}
	return p, nil
}
