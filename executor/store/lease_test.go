package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// loadBuilder does what a node of a build does, iters times, each node under
// its own lease: look the key up (keys are shared with other builders), and on
// a miss write a log, commit a tree of a unique and a shared file, check it
// out and record the action. Whatever GC does meanwhile, every PutAction must
// succeed and the checkout must stay whole while the lease holds it.
func loadBuilder(ctx context.Context, s *Store, id string, iters int) error {
	for i := range iters {
		if err := loadNode(ctx, s, id, i); err != nil {
			return fmt.Errorf("builder %s node %d: %w", id, i, err)
		}
	}
	return nil
}

func loadNode(ctx context.Context, s *Store, id string, i int) error {
	l, err := s.NewLease(ctx, "node-"+id+"-"+strconv.Itoa(i))
	if err != nil {
		return err
	}
	defer l.Release()
	ctx = WithLease(ctx, l)
	key := "load-" + strconv.Itoa(i%4)
	unlock, err := s.LockKey(ctx, key)
	if err != nil {
		return err
	}
	defer unlock()
	a, err := s.GetAction(ctx, key)
	if errors.Is(err, ErrNotFound) {
		work, err := s.MkdirTemp("work-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(work)
		os.MkdirAll(filepath.Join(work, "d"), 0o755)
		os.WriteFile(filepath.Join(work, "d", "out"), []byte("output of "+key), 0o644)
		// The same bytes in every build: often an object GC has chosen to delete.
		os.WriteFile(filepath.Join(work, "shared"), []byte("shared content"), 0o644)
		_, td, err := s.CommitDir(ctx, work)
		if err != nil {
			return err
		}
		logd, err := s.Ingest(ctx, "text/plain", strings.NewReader("log of "+key+" by "+id))
		if err != nil {
			return err
		}
		common := []byte("common blob")
		if err := s.Push(ctx, ocispec.Descriptor{Digest: digest.FromBytes(common), Size: int64(len(common))}, bytes.NewReader(common)); err != nil {
			return err
		}
		if _, err := s.Checkout(ctx, td); err != nil {
			return err
		}
		a = &Action{Key: key, Tree: td, Log: logd.Digest, Outputs: map[string]digest.Digest{"common": digest.FromBytes(common)}}
		if err := s.PutAction(ctx, a); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	co, err := s.Checkout(ctx, a.Tree)
	if err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(co, "d", "out")); err != nil || string(b) != "output of "+key {
		return fmt.Errorf("checkout of %s: %q, %v", key, b, err)
	}
	if err := s.CheckCheckout(ctx, a.Tree, true); err != nil {
		return err
	}
	r, err := s.Fetch(ctx, ocispec.Descriptor{Digest: a.Log, Size: -1})
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = new(bytes.Buffer).ReadFrom(r)
	return err
}

// worker is a long-lived worker's lease: everything it added must stay.
type worker struct {
	s     *Store
	l     *Lease
	blobs []digest.Digest
	tree  digest.Digest
}

func newWorker(ctx context.Context, s *Store) (*worker, error) {
	l, err := s.NewLease(ctx, "worker")
	if err != nil {
		return nil, err
	}
	w := &worker{s: s, l: l}
	ctx = WithLease(ctx, l)
	work, err := s.MkdirTemp("worker-")
	if err != nil {
		return nil, err
	}
	os.WriteFile(filepath.Join(work, "a"), []byte("worker file a"), 0o644)
	os.WriteFile(filepath.Join(work, "shared"), []byte("shared content"), 0o644)
	if _, w.tree, err = s.CommitDir(ctx, work); err != nil {
		return nil, err
	}
	if _, err := s.Checkout(ctx, w.tree); err != nil {
		return nil, err
	}
	return w, w.addBlob(ctx, 0)
}

// addBlob writes one more blob under the worker's lease, the way a worker
// keeps taking work while GC runs.
func (w *worker) addBlob(ctx context.Context, i int) error {
	d, err := w.s.PutBytes(WithLease(ctx, w.l), []byte(fmt.Sprintf("worker blob %d", i)))
	w.blobs = append(w.blobs, d)
	return err
}

// check fails if anything the worker holds is gone or its checkout changed.
func (w *worker) check(ctx context.Context) error {
	for _, d := range append([]digest.Digest{w.tree}, w.blobs...) {
		if !w.s.HasBlob(d) {
			return fmt.Errorf("leased blob %s disappeared", d)
		}
	}
	return w.s.CheckCheckout(ctx, w.tree, true)
}

// TestGCUnderLoad (RELIABILITY row 6, issue 8): GC in a loop beside builders
// in goroutines and in a child process, writers that never stop, and a
// long-lived worker holding one lease across the whole run. Nothing a lease
// holds disappears, every PutAction succeeds, every checkout in use stays
// whole, and GC is never starved by the writers. Bounded by iterations.
func TestGCUnderLoad(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := newWorker(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer w.l.Release()

	const builders, iters, minGC = 3, 8, 12
	var builds sync.WaitGroup
	errs := make(chan error, builders+4)
	gcStarted := make(chan struct{})
	for b := range builders {
		builds.Add(1)
		go func() {
			defer builds.Done()
			<-gcStarted
			errs <- loadBuilder(ctx, s, "g"+strconv.Itoa(b), iters)
		}()
	}
	cmd := child(t, "gcload", dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	childDone := make(chan error, 1)
	go func() { childDone <- cmd.Wait() }()

	// Writers that never stop until GC is done: GC must get its turns anyway.
	gcDone := make(chan struct{})
	var streams sync.WaitGroup
	var streamed atomic.Int64
	for g := range 2 {
		streams.Add(1)
		go func() {
			defer streams.Done()
			for i := 0; ; i++ {
				select {
				case <-gcDone:
					return
				default:
				}
				if _, err := s.PutBytes(ctx, []byte(fmt.Sprintf("stream %d %d", g, i))); err != nil {
					errs <- err
					return
				}
				streamed.Add(1)
			}
		}()
	}

	buildersDone := make(chan struct{})
	go func() { builds.Wait(); close(buildersDone) }()
	var childErr error
	childRunning := true
	gcs := 0
	for ; gcs < minGC || childRunning || !closed(buildersDone); gcs++ {
		max := int64(-1)
		if gcs%2 == 0 {
			max = 0 // drops every record: only leases keep anything
		}
		if _, err := s.GC(ctx, max); err != nil {
			t.Fatalf("GC %d: %v", gcs, err)
		}
		if gcs == 0 {
			close(gcStarted)
		}
		if err := w.check(ctx); err != nil {
			t.Fatalf("after GC %d: %v", gcs, err)
		}
		if err := w.addBlob(ctx, gcs+1); err != nil {
			t.Fatal(err)
		}
		select {
		case childErr = <-childDone:
			childRunning = false
		default:
		}
	}
	close(gcDone)
	streams.Wait()
	<-buildersDone
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if childErr != nil {
		t.Errorf("child builder: %v\n%s", childErr, out.String())
	}
	if err := w.check(ctx); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	t.Logf("%d GCs beside %d builders × %d nodes, a child process and %d streamed writes", gcs, builders, iters, streamed.Load())
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// TestGCWriterRace: the classic race, forced. GC has chosen what to delete
// when a writer stores bytes GC is about to remove (so the store only links to
// the existing object) and references them. Whether the writer holds a lease or
// records an action, the object stays; a record GC chose to drop but that was
// used meanwhile stays too, also when a build's lookup under a lease did not
// mark it used because it was marked a moment ago ("leased record").
func TestGCWriterRace(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []string{"lease", "action", "used record", "leased record"} {
		t.Run(tc, func(t *testing.T) {
			s := newStore(t)
			content := []byte("written before, referenced during GC")
			d, err := s.PutBytes(ctx, content)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"f": "file content"})
			_, td, err := s.CommitDir(ctx, dir)
			if err != nil {
				t.Fatal(err)
			}
			if tc == "used record" || tc == "leased record" {
				if err := s.PutAction(ctx, &Action{Key: "old", Tree: td, Log: d}); err != nil {
					t.Fatal(err)
				}
			}
			var marked unix.Timespec // the record's use time before GC
			if tc == "leased record" {
				var st unix.Stat_t
				if err := unix.Stat(s.actionPath("old"), &st); err != nil {
					t.Fatal(err)
				}
				marked = st.Mtim
			}
			var l *Lease
			s.afterMark = func() {
				s.afterMark = nil
				switch tc {
				case "lease":
					if l, err = s.NewLease(ctx, "late"); err != nil {
						t.Error(err)
						return
					}
					lctx := WithLease(ctx, l)
					if d2, err := s.PutBytes(lctx, content); err != nil || d2 != d {
						t.Errorf("PutBytes = %s, %v", d2, err)
					}
					if _, err := s.Checkout(lctx, td); err != nil {
						t.Error(err)
					}
				case "action":
					if _, err := s.PutBytes(ctx, content); err != nil {
						t.Error(err)
					}
					if err := s.PutAction(ctx, &Action{Key: "new", Tree: td, Log: d}); err != nil {
						t.Error(err)
					}
				case "used record":
					if _, err := s.GetAction(ctx, "old"); err != nil {
						t.Error(err)
					}
				case "leased record":
					if l, err = s.NewLease(ctx, "build"); err != nil {
						t.Error(err)
						return
					}
					if _, err := s.GetAction(WithLease(ctx, l), "old"); err != nil {
						t.Error(err)
					}
					var st unix.Stat_t
					if unix.Stat(s.actionPath("old"), &st) == nil && st.Mtim != marked {
						t.Error("a lookup under a lease rewrote a use time a moment old")
					}
				}
			}
			// maxSize 0: GC chose to drop every record it saw.
			if _, err := s.GC(ctx, 0); err != nil {
				t.Fatal(err)
			}
			if !s.HasBlob(d) || !s.HasBlob(td) {
				t.Fatalf("GC removed what a writer referenced during the GC: blob %v tree %v", s.HasBlob(d), s.HasBlob(td))
			}
			if err := s.CheckCheckout(ctx, td, true); tc == "lease" && err != nil {
				t.Fatalf("leased checkout: %v", err)
			}
			if tc != "lease" {
				key := map[string]string{"action": "new", "used record": "old", "leased record": "old"}[tc]
				a, err := s.GetAction(ctx, key)
				if err != nil {
					t.Fatalf("GetAction(%s) after GC: %v", key, err)
				}
				if _, err := s.Checkout(ctx, a.Tree); err != nil {
					t.Fatal(err)
				}
			}
			if rep, err := s.Verify(ctx); err != nil || !rep.OK() {
				t.Fatalf("Verify = %+v, %v", rep, err)
			}
			if l != nil {
				l.Release()
				if _, err := s.GC(ctx, 0); err != nil {
					t.Fatal(err)
				}
				if s.HasBlob(d) {
					t.Fatal("the object outlived its lease")
				}
			}
		})
	}
}

// TestLeaseKeepsTree: a leased tree keeps its manifest, its files and its
// checkout through GC(0); a digest added with Add before its content exists is
// kept once it arrives; releasing the lease lets GC take them.
func TestLeaseKeepsTree(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"bin/tool": "tool", "etc/conf": "conf"})
	tr, td, err := s.CommitDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.NewLease(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	later := []byte("pushed after Add")
	if err := l.Add(ctx, td, digest.FromBytes(later)); err != nil {
		t.Fatal(err)
	}
	co, err := s.Checkout(ctx, td)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutBytes(ctx, later); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, 0); err != nil {
		t.Fatal(err)
	}
	for _, e := range tr.Entries {
		if e.Digest != "" && !s.HasBlob(e.Digest) {
			t.Fatalf("file %s of a leased tree removed", e.Path)
		}
	}
	if !s.HasBlob(td) || !s.HasBlob(digest.FromBytes(later)) {
		t.Fatal("leased manifest or blob removed")
	}
	if err := s.CheckCheckout(ctx, td, true); err != nil {
		t.Fatalf("checkout of a leased tree: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Add(ctx, td); err == nil {
		t.Fatal("Add to a released lease succeeded")
	}
	if _, err := s.GC(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if s.HasBlob(td) || checkAllBlobs(t, s) != 0 {
		t.Fatal("objects outlived their lease")
	}
	if _, err := os.Stat(co); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("checkout outlived its lease")
	}
	if left, _ := os.ReadDir(filepath.Join(s.Dir(), dirLeases)); len(left) != 0 {
		t.Fatalf("leases/ holds %v after release", left)
	}
}

// TestVerifyIgnoresLeases: a corrupt object is quarantined even while a
// lease holds it.
func TestVerifyIgnoresLeases(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	l, err := s.NewLease(ctx, "holder")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	d, err := s.PutBytes(WithLease(ctx, l), []byte("will rot"))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.BlobPath(d)
	os.Chmod(p, 0o644)
	os.WriteFile(p, []byte("has rot"), 0o444)
	rep, err := s.Verify(ctx)
	if err != nil || len(rep.Quarantined) != 1 || s.HasBlob(d) {
		t.Fatalf("Verify = %+v, %v; want the leased blob quarantined", rep, err)
	}
}

// TestGateTurnstile: once GC waits for the write sections in flight, no new
// one starts, in this process or another (a second Store stands in for it),
// so a stream of writers cannot keep GC out; GC then gets in as soon as the
// sections in flight end, and writers after it.
func TestGateTurnstile(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	other, err := Open(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	leave, err := s.shared(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gcIn := make(chan func())
	go func() {
		release, err := s.exclusive(ctx)
		if err != nil {
			t.Error(err)
			close(gcIn)
			return
		}
		gcIn <- release
	}()
	// Yield until GC is at the turnstile (a broken one never gets there).
	for i := 0; !s.gate.pending(); i++ {
		if i == 1e6 {
			t.Fatal("GC never reached the turnstile")
		}
		runtime.Gosched()
	}
	// A cancelled context: entering gives up at once unless it is let in.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for name, st := range map[string]*Store{"this process": s, "another process": other} {
		if l, err := st.shared(cancelled); err == nil {
			l()
			t.Fatalf("a write section started in %s while GC waited", name)
		}
	}
	leave()
	release := <-gcIn
	if release == nil {
		t.FailNow()
	}
	release()
	for name, st := range map[string]*Store{"this process": s, "another process": other} {
		l, err := st.shared(cancelled)
		if err != nil {
			t.Fatalf("no write section in %s after GC: %v", name, err)
		}
		l()
	}
}
