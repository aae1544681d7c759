package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// VerifyReport says what Verify checked and what it found.
type VerifyReport struct {
	// Blobs and Files count the blobs and file objects checked; Bytes is the content
	// hashed (each inode once).
	Blobs int   `json:"blobs"`
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// Corrupt lists the store-relative paths of objects whose content, size or
	// metadata did not match their name.
	Corrupt []string `json:"corrupt"`
	// Quarantined lists where the corrupt objects were moved, relative to the store.
	Quarantined []string `json:"quarantined"`
	// DroppedActions lists the keys of action entries removed because they referred to
	// a corrupt or missing object.
	DroppedActions []string `json:"dropped_actions"`
	// RemovedCheckouts lists the tree digests whose checkouts were removed.
	RemovedCheckouts []digest.Digest `json:"removed_checkouts"`
}

// OK reports whether nothing was wrong.
func (r *VerifyReport) OK() bool {
	return len(r.Corrupt) == 0 && len(r.DroppedActions) == 0 && len(r.RemovedCheckouts) == 0
}

// Verify waits for the exclusive GC lock and re-hashes every blob and file object. A
// bad object (wrong content, or a file object whose mode or owners differ from its
// name) is moved to quarantine/; action entries that refer to bad content or to a
// missing tree, log or output blob are dropped, and checkouts that contain bad objects
// are removed, so the next build rebuilds instead of using bad bytes. The error is
// only for failures to do the check; what was found is in the report.
func (s *Store) Verify(ctx context.Context) (*VerifyReport, error) {
	r, err := s.verify(ctx)
	if err != nil {
		return r, fmt.Errorf("store %s: verify: %w", s.dir, err)
	}
	return r, nil
}

type verifyObj struct {
	rel  string // store-relative path
	hex  string
	file bool // file object (else blob)
	mode uint32
	uid  int
	gid  int
}

func (s *Store) verify(ctx context.Context) (*VerifyReport, error) {
	rep := &VerifyReport{}
	if s.readOnly {
		return rep, ErrReadOnly
	}
	unlock, err := s.lockRun(ctx)
	if err != nil {
		return rep, err
	}
	defer unlock()

	var objs []verifyObj
	for _, top := range []string{dirBlobs, dirFiles} {
		shards, err := os.ReadDir(filepath.Join(s.dir, top))
		if err != nil {
			return rep, err
		}
		for _, sh := range shards {
			des, err := os.ReadDir(filepath.Join(s.dir, top, sh.Name()))
			if err != nil {
				return rep, err
			}
			for _, de := range des {
				o := verifyObj{rel: filepath.Join(top, sh.Name(), de.Name()), hex: de.Name()}
				if top == dirFiles {
					o.file = true
					var ok bool
					if o.hex, o.mode, o.uid, o.gid, ok = parseFileObjName(de.Name()); !ok {
						o.hex = ""
					}
				}
				objs = append(objs, o)
			}
		}
	}

	// Hash each inode once, in parallel.
	type result struct {
		d   digest.Digest
		n   int64
		err error
	}
	var mu sync.Mutex
	hashed := map[inode]*result{}
	stats := make([]unix.Stat_t, len(objs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i := range objs {
		p := filepath.Join(s.dir, objs[i].rel)
		if err := unix.Lstat(p, &stats[i]); err != nil {
			stats[i] = unix.Stat_t{}
			continue
		}
		in := inode{uint64(stats[i].Dev), stats[i].Ino}
		mu.Lock()
		_, done := hashed[in]
		res := &result{}
		if !done {
			hashed[in] = res
		}
		mu.Unlock()
		if done {
			continue
		}
		g.Go(func() error {
			f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err != nil {
				res.err = err
				return nil
			}
			defer f.Close()
			res.d, res.n, res.err = hashFile(gctx, f)
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return rep, err
	}

	// Hashing and the checks that read trees and checkouts run beside builds;
	// moving objects aside and dropping entries happen under the exclusive lock.
	bad := map[string]bool{}      // content hex known bad
	badFiles := map[string]bool{} // file object names to quarantine
	var toQuarantine []int        // indices into objs
	quarantine := func(i int) {
		o := objs[i]
		rep.Corrupt = append(rep.Corrupt, o.rel)
		toQuarantine = append(toQuarantine, i)
		if o.file {
			badFiles[filepath.Base(o.rel)] = true
		}
	}
	counted := map[inode]bool{}
	for i, o := range objs {
		st := &stats[i]
		if st.Ino == 0 {
			continue // vanished
		}
		if o.file {
			rep.Files++
		} else {
			rep.Blobs++
		}
		in := inode{uint64(st.Dev), st.Ino}
		res := hashed[in]
		if !counted[in] {
			counted[in] = true
			rep.Bytes += res.n
		}
		ok := o.hex != "" && st.Mode&unix.S_IFMT == unix.S_IFREG && res.err == nil &&
			res.d == digest.NewDigestFromEncoded(digest.SHA256, o.hex)
		if !ok && o.hex != "" {
			bad[o.hex] = true
		}
		if ok && o.file && (st.Mode&0o7777 != o.mode || (s.root && (int(st.Uid) != o.uid || int(st.Gid) != o.gid))) {
			ok = false // metadata changed: the content is fine, the object is not
		}
		if !ok {
			quarantine(i)
		}
	}
	// Every object holding bad content goes, even one that hashed right on its own inode.
	for i, o := range objs {
		if stats[i].Ino != 0 && bad[o.hex] && !contains(rep.Corrupt, o.rel) {
			quarantine(i)
		}
	}

	trees := map[digest.Digest]*tree.Tree{}
	treeBad := func(d digest.Digest) bool {
		t, ok := trees[d]
		if !ok {
			var err error
			if t, err = s.getTree(ctx, d); err != nil {
				t = nil
			}
			trees[d] = t
		}
		if t == nil {
			return true
		}
		for _, e := range t.Entries {
			if e.Type != tree.File {
				continue
			}
			h := e.Digest.Encoded()
			if bad[h] || badFiles[fileObjName(h, e.Mode, e.UID, e.GID)] {
				return true
			}
		}
		return false
	}
	ents, err := s.actionEntries()
	if err != nil {
		return rep, err
	}
	for _, ae := range ents {
		if ae.a.Tree != "" {
			treeBad(ae.a.Tree) // read outside the lock
		}
	}
	type checkout struct {
		hex string
		in  inode
		bad bool
	}
	var cos []checkout
	des, err := os.ReadDir(filepath.Join(s.dir, dirCheckouts))
	if err != nil {
		return rep, err
	}
	for _, de := range des {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(s.dir, dirCheckouts, de.Name()), &st) != nil {
			continue
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, de.Name())
		good := d.Validate() == nil && !bad[de.Name()] && !treeBad(d) && s.checkCheckout(ctx, d, false) == nil
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		cos = append(cos, checkout{hex: de.Name(), in: inode{uint64(st.Dev), st.Ino}, bad: !good})
	}
	trash, err := s.MkdirTemp("verify-")
	if err != nil {
		return rep, err
	}
	defer forceRemoveAll(trash)

	release, err := s.exclusive(ctx)
	if err != nil {
		return rep, err
	}
	defer release()
	for _, i := range toQuarantine {
		o := objs[i]
		p := filepath.Join(s.dir, o.rel)
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Dev != stats[i].Dev || st.Ino != stats[i].Ino {
			continue // gone, or replaced by a writer since it was hashed
		}
		name := strings.ReplaceAll(o.rel, "/", "_") + "." + time.Now().UTC().Format("20060102T150405") + "." + rand.Text()
		dst := filepath.Join(dirQuarantine, name)
		if err := os.Rename(p, filepath.Join(s.dir, dst)); err != nil {
			return rep, err
		}
		rep.Quarantined = append(rep.Quarantined, dst)
	}
	// Entries written since they were listed are checked too.
	if ents, err = s.actionEntries(); err != nil {
		return rep, err
	}
	// An entry goes when an object it refers to is bad or gone, when its tree
	// holds bad content, or when it was built from a tree or blob that is bad
	// or that a dropped entry produced: drop until nothing more goes.
	tainted := map[digest.Digest]bool{}
	dropped := make([]bool, len(ents))
	for changed := true; changed; {
		changed = false
		for i, ae := range ents {
			if dropped[i] {
				continue
			}
			drop := false
			for _, d := range ae.a.blobs() {
				if bad[d.Encoded()] || !s.HasBlob(d) || tainted[d] {
					drop = true
				}
			}
			for _, d := range ae.a.Inputs {
				// An input GC removed since is no evidence either way.
				if bad[d.Encoded()] || tainted[d] || (s.HasBlob(d) && treeBad(d)) {
					drop = true
				}
			}
			if !drop && ae.a.Tree != "" {
				drop = treeBad(ae.a.Tree)
			}
			if !drop {
				continue
			}
			dropped[i], changed = true, true
			if ae.a.Tree != "" {
				tainted[ae.a.Tree] = true
			}
			for _, d := range ae.a.Outputs {
				tainted[d] = true
			}
			if err := removeIfExists(ae.path); err != nil {
				return rep, err
			}
			rep.DroppedActions = append(rep.DroppedActions, ae.a.Key)
		}
	}
	for _, co := range cos {
		d := digest.NewDigestFromEncoded(digest.SHA256, co.hex)
		if !co.bad && !tainted[d] {
			continue
		}
		p := filepath.Join(s.dir, dirCheckouts, co.hex)
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || (inode{uint64(st.Dev), st.Ino}) != co.in {
			continue
		}
		if err := os.Rename(p, filepath.Join(trash, co.hex)); err != nil {
			return rep, err
		}
		rep.RemovedCheckouts = append(rep.RemovedCheckouts, d)
	}
	sort.Strings(rep.DroppedActions)
	return rep, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
