package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
	"github.com/strata-build/strata/internal/regtest"
)

// bigTree stores a tree of n files (100 distinct contents) in st and returns
// an action for it with a log and an artifact.
func bigTree(t *testing.T, st *store.Store, n int, salt string) *store.Action {
	t.Helper()
	ctx := context.Background()
	tr := &tree.Tree{}
	var contents []digest.Digest
	for i := range 100 {
		d, err := st.PutBytes(ctx, []byte(fmt.Sprintf("file content %s%d\n", salt, i)))
		if err != nil {
			t.Fatal(err)
		}
		contents = append(contents, d)
	}
	dirs := max(1, n/500)
	for d := range dirs {
		tr.Entries = append(tr.Entries, tree.Entry{Path: fmt.Sprintf("d%03d", d), Type: tree.Dir, Mode: 0o755})
		for f := range n / dirs {
			i := (d*7 + f) % 100
			size := int64(len(fmt.Sprintf("file content %s%d\n", salt, i)))
			tr.Entries = append(tr.Entries, tree.Entry{Path: fmt.Sprintf("d%03d/f%05d", d, f), Type: tree.File, Mode: 0o644, Size: size, Digest: contents[i]})
		}
	}
	tr.Entries = append(tr.Entries, tree.Entry{Path: "link", Type: tree.Symlink, Mode: 0o777, Target: "d000/f00000"})
	tr.Sort()
	td, err := st.PutTree(ctx, tr)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := st.PutBytes(ctx, []byte("built it\n"))
	art, _ := st.PutBytes(ctx, bytes.Repeat([]byte("image"), 1000))
	key := digest.FromString(fmt.Sprint("key", n, salt)).Encoded()
	return &store.Action{Key: key, Tree: td, Log: log, Outputs: map[string]digest.Digest{"x.squashfs": art}, Meta: []byte(`{"name":"images.x.stages[0]"}`)}
}

// TestCacheRemoteRoundTrip: a 20,000-file result goes up in a handful of
// blob requests (one layer for the tree), comes back into an empty store
// through a tiered cache, and is an action cache hit there; a second upload
// sends nothing.
func TestCacheRemoteRoundTrip(t *testing.T) {
	ctx := context.Background()
	srv := startRegistry(t, regtest.Options{})
	stA := newStore(t)
	start := time.Now()
	lap := func(what string) { t.Logf("%s: %v", what, time.Since(start)); start = time.Now() }
	a := bigTree(t, stA, 20000, "")
	lap("tree")
	if err := stA.PutAction(ctx, a); err != nil {
		t.Fatal(err)
	}
	cA := newClient(t, stA, Options{})
	to, err := cA.Cache(srv.Host + "/cache/build")
	if err != nil {
		t.Fatal(err)
	}
	if err := to.PutAction(ctx, a); err != nil {
		t.Fatal(err)
	}
	lap("put")
	if n, _ := srv.BlobUploads(); n >= 10 {
		t.Fatalf("a 20,000-file tree took %d blob uploads", n)
	}
	srv.Reset()
	if err := to.PutAction(ctx, a); err != nil {
		t.Fatal(err)
	}
	if n, b := srv.BlobUploads(); n != 0 || b != 0 {
		t.Fatalf("a second upload sent %d blobs, %d bytes", n, b)
	}

	stB := newStore(t)
	cB := newClient(t, stB, Options{})
	from, err := cB.Cache(srv.Host + "/cache/build")
	if err != nil {
		t.Fatal(err)
	}
	tiered := &Tiered{Local: stB, From: []*Cache{from}}
	if _, err := tiered.GetAction(ctx, digest.FromString("absent").Encoded()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a miss: %v", err)
	}
	got, err := tiered.GetAction(ctx, a.Key)
	if err != nil {
		t.Fatal(err)
	}
	lap("get")
	if got.Tree != a.Tree || got.Log != a.Log || got.Outputs["x.squashfs"] != a.Outputs["x.squashfs"] || string(got.Meta) != string(a.Meta) {
		t.Fatalf("got %+v, want %+v", got, a)
	}
	// Now a local hit: the store has the entry and every blob it needs.
	if _, err := stB.GetAction(ctx, a.Key); err != nil {
		t.Fatal(err)
	}
	co, err := stB.Checkout(ctx, a.Tree)
	if err != nil {
		t.Fatal(err)
	}
	lap("checkout")
	if _, err := os.Lstat(filepath.Join(co, "d039", "f00499")); err != nil {
		t.Fatal(err)
	}
}

// TestCacheRefusesTamperedEntry: an entry whose tree archive does not match
// its tree manifest is refused, and nothing is recorded.
func TestCacheRefusesTamperedEntry(t *testing.T) {
	ctx := context.Background()
	srv := startRegistry(t, regtest.Options{})
	stA := newStore(t)
	a := bigTree(t, stA, 200, "a")
	b := bigTree(t, stA, 100, "b")
	cA := newClient(t, stA, Options{})
	to, _ := cA.Cache(srv.Host + "/cache/build")
	for _, x := range []*store.Action{a, b} {
		if err := to.PutAction(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	// Forge an entry: a's record and tree manifest, b's (smaller) archive.
	ra, _ := ParseRef(srv.Host + "/cache/build")
	tg, _ := cA.target(ra)
	ma, _ := tg.resolve(ctx, a.Key)
	mbA, _ := readVerified(ctx, tg, ma)
	mb, _ := tg.resolve(ctx, b.Key)
	mbB, _ := readVerified(ctx, tg, mb)
	manA, _ := parseManifest(mbA)
	manB, _ := parseManifest(mbB)
	manA.Layers[0] = manB.Layers[0]
	fb, fd, _ := encode(manA)
	fd.MediaType = mb.MediaType
	if err := tg.tag(ctx, fd, fb, a.Key); err != nil {
		t.Fatal(err)
	}
	stB := newStore(t)
	from, _ := newClient(t, stB, Options{}).Cache(srv.Host + "/cache/build")
	var warnings []Event
	tiered := &Tiered{Local: stB, From: []*Cache{from}, Events: func(ev Event) { warnings = append(warnings, ev) }}
	// A forged entry is a miss (the node is built) and a warning, never a hit.
	_, err := tiered.GetAction(ctx, a.Key)
	if !errors.Is(err, store.ErrNotFound) || len(warnings) != 1 || warnings[0].Kind != EventCacheWarning {
		t.Fatalf("forged entry: %v, warnings %+v", err, warnings)
	}
	if _, direct := from.GetAction(ctx, a.Key); !errors.Is(direct, ErrInvalid) && !errors.Is(direct, ErrDigest) {
		t.Fatalf("the cache itself took the forged entry: %v", direct)
	}
	t.Log(warnings[0].Message)
	if _, err := stB.GetAction(ctx, a.Key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the forged entry was recorded: %v", err)
	}
}
