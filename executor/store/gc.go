package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// inode identifies a file; hardlinks share one and are counted once.
type inode struct{ dev, ino uint64 }

// scan is one walk of the store, classifying every inode.
type scan struct {
	usage      map[inode]int64     // disk usage (st_blocks*512) of every inode
	fixed      map[inode]bool      // inodes outside any collectable object or record
	blobs      map[string]inode    // blob hex → inode
	files      map[string]inode    // file object name → inode
	filesByHex map[string][]string // content hex → file object names
	records    map[string]inode    // "actions/<name>", "failures/<name>", "weak/<name>" → inode
	checkouts  map[string]inode    // checkout hex → inode of its directory
	coInodes   map[string][]inode  // checkout hex → every inode in it
}

func (s *Store) scan(ctx context.Context) (*scan, error) {
	sc := &scan{
		usage: map[inode]int64{}, fixed: map[inode]bool{}, blobs: map[string]inode{},
		files: map[string]inode{}, filesByHex: map[string][]string{}, records: map[string]inode{},
		checkouts: map[string]inode{}, coInodes: map[string][]inode{},
	}
	err := filepath.WalkDir(s.dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed by a concurrent writer's rename or sweep
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		in := inode{uint64(st.Dev), st.Ino}
		sc.usage[in] = st.Blocks * 512
		rel, _ := filepath.Rel(s.dir, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		switch {
		case parts[0] == "blobs" && len(parts) == 4:
			sc.blobs[parts[3]] = in
		case parts[0] == dirFiles && len(parts) == 3:
			sc.files[parts[2]] = in
			if hex, _, _, _, ok := parseFileObjName(parts[2]); ok {
				sc.filesByHex[hex] = append(sc.filesByHex[hex], parts[2])
			}
		case (parts[0] == dirActions || parts[0] == dirFailures || parts[0] == dirWeak) && len(parts) == 2:
			sc.records[parts[0]+"/"+parts[1]] = in
		case parts[0] == dirCheckouts && len(parts) >= 2:
			if len(parts) == 2 {
				sc.checkouts[parts[1]] = in
			}
			sc.coInodes[parts[1]] = append(sc.coInodes[parts[1]], in)
		default:
			sc.fixed[in] = true
		}
		return nil
	})
	return sc, err
}

func (sc *scan) total() int64 {
	var n int64
	for _, u := range sc.usage {
		n += u
	}
	return n
}

// Size returns the disk usage of the store in bytes, counting each inode once (blobs,
// file objects and checkouts share inodes through hardlinks).
func (s *Store) Size(ctx context.Context) (int64, error) {
	sc, err := s.scan(ctx)
	if err != nil {
		return 0, fmt.Errorf("store %s: size: %w", s.dir, err)
	}
	return sc.total(), nil
}

// GCStats reports what GC did.
type GCStats struct {
	BytesBefore, BytesAfter int64
	ActionsRemoved          int
	FailuresRemoved         int
	WeakRemoved             int
	BlobsRemoved            int
	FilesRemoved            int
	CheckoutsRemoved        int
}

// refs is what one record keeps alive.
type refs struct {
	blobs     []string // hex
	files     []string // file object names
	checkouts []string // tree hex
}

// weakCap bounds the number of weak records GC keeps, most recently used first.
var weakCap = 10000

// gcSlice bounds how long one of GC's exclusive sections deletes: writers wait
// for at most about that long. An unlink costs 10 to 150 µs.
const gcSlice = 10 * time.Millisecond

// GC drops the least recently used records (action entries, failure records and weak
// records together) until the disk usage of the store is at most maxSize bytes, and
// then removes every blob, file object and checkout that no remaining record refers
// to and no live lease holds, the contents of quarantine/, the files of dead leases,
// unheld key lock files and stale temporary files. An entry whose tree cannot be
// read is dropped, and weak records beyond the 10,000 most recently used. A
// negative maxSize drops no record but those. GC never waits for a build: see the
// package documentation for how it excludes writers only while it deletes.
func (s *Store) GC(ctx context.Context, maxSize int64) (GCStats, error) {
	st, err := s.gc(ctx, maxSize)
	if err != nil {
		return st, fmt.Errorf("store %s: gc: %w", s.dir, err)
	}
	return st, nil
}

// record is an action entry, failure record or weak record as GC saw it first.
type record struct {
	rel   string // relative to the store: "actions/<key>.json"
	ino   uint64 // as readdir reported it
	mtime unix.Timespec
	refs  refs
	ok    bool // its tree could be read
}

// gcRun is the state of one GC: what it keeps, and how far it has read the
// leases and records written since it started.
type gcRun struct {
	s     *Store
	sc    *scan
	trees map[digest.Digest]*tree.Tree

	keepBlob    map[string]bool // blob hex
	keepFileHex map[string]bool // every file object of the content hex
	keepFile    map[string]bool // file object name
	keepCO      map[string]bool // checkout hex

	leaseOff map[string]int64 // lease file name → bytes read; -1 for a dead lease
	leased   map[string]bool  // every object a lease named
	pending  map[string]leaseKind
	recIno   map[string]uint64 // action or failure record → inode last seen by readdir
}

func (s *Store) gc(ctx context.Context, maxSize int64) (GCStats, error) {
	var stats GCStats
	if s.readOnly {
		return stats, ErrReadOnly
	}
	unlock, err := s.lockRun(ctx)
	if err != nil {
		return stats, err
	}
	defer unlock()
	g := &gcRun{
		s: s, trees: map[digest.Digest]*tree.Tree{},
		keepBlob: map[string]bool{}, keepFileHex: map[string]bool{}, keepFile: map[string]bool{}, keepCO: map[string]bool{},
		leaseOff: map[string]int64{}, leased: map[string]bool{}, pending: map[string]leaseKind{}, recIno: map[string]uint64{},
	}

	// Mark, without any lock: what the records and leases refer to now. Records
	// and lease lines that appear later are caught up with before each batch.
	if g.sc, err = s.scan(ctx); err != nil {
		return stats, err
	}
	stats.BytesBefore = g.sc.total()
	if err := g.readLeases(ctx, true); err != nil {
		return stats, err
	}
	recs, err := g.readRecords(ctx)
	if err != nil {
		return stats, err
	}
	drop := g.chooseRecords(recs, maxSize)
	cands := g.candidates()
	if s.afterMark != nil {
		s.afterMark()
	}

	trash, err := s.MkdirTemp("gc-")
	if err != nil {
		return stats, err
	}
	defer forceRemoveAll(trash)

	// Delete in short exclusive sections, so writers wait at most one slice.
	// Records go first, so that no record ever points at a removed object;
	// their removal is made durable before the first object goes, so a crash
	// cannot bring back a record whose objects are gone.
	recordsSynced := false
	for first := true; first || len(drop) > 0 || len(cands) > 0; first = false {
		if err := g.catchUp(ctx); err != nil {
			return stats, err
		}
		release, err := s.exclusive(ctx)
		if err != nil {
			return stats, err
		}
		err = g.catchUp(ctx)
		end := time.Now().Add(gcSlice)
		if err == nil && len(drop) > 0 {
			drop, err = g.dropRecords(drop, end, &stats)
		}
		if err == nil && len(drop) == 0 && len(cands) > 0 && !recordsSynced {
			for _, d := range []string{dirActions, dirFailures} {
				if err = syncDir(filepath.Join(s.dir, d)); err != nil {
					break
				}
			}
			recordsSynced = true
		}
		if err == nil && len(drop) == 0 {
			cands, err = g.sweep(cands, end, trash, &stats)
		}
		release()
		if err != nil {
			return stats, err
		}
	}

	if err := forceRemoveAll(trash); err != nil {
		return stats, err
	}
	if err := emptyDir(filepath.Join(s.dir, dirQuarantine)); err != nil {
		return stats, err
	}
	for _, dir := range []string{dirLeases, dirKeyLocks} {
		if err := s.sweepUnheld(dir); err != nil {
			return stats, err
		}
	}
	if _, err := s.sweepTmp(); err != nil {
		return stats, err
	}
	after, err := s.scan(ctx)
	if err != nil {
		return stats, err
	}
	stats.BytesAfter = after.total()
	return stats, nil
}

// readRecords reads every record, most recently used first (ties by name).
func (g *gcRun) readRecords(ctx context.Context) ([]*record, error) {
	var out []*record
	for _, dir := range []string{dirActions, dirFailures, dirWeak} {
		inos, err := readDirInodes(filepath.Join(g.s.dir, dir))
		if err != nil {
			return nil, err
		}
		for name, ino := range inos {
			rel := dir + "/" + name
			g.recIno[rel] = ino
			r, err := g.readRecord(ctx, rel, ino)
			if err != nil {
				return nil, err
			}
			if r != nil {
				out = append(out, r)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].mtime != out[j].mtime {
			return out[i].mtime.Nano() > out[j].mtime.Nano()
		}
		return out[i].rel < out[j].rel
	})
	return out, nil
}

// readRecord reads the record rel and what it refers to. A record that is not
// there any more is nil; one that cannot be read is not ok (it is dropped).
func (g *gcRun) readRecord(ctx context.Context, rel string, ino uint64) (*record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := filepath.Join(g.s.dir, filepath.FromSlash(rel))
	r := &record{rel: rel, ino: ino}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, nil
	}
	r.mtime = st.Mtim
	dir, name := filepath.Split(rel)
	if !strings.HasSuffix(name, ".json") {
		return r, nil // not a record: dropped
	}
	switch strings.TrimSuffix(dir, "/") {
	case dirActions:
		a, _, err := g.s.readAction(p, false)
		if err != nil {
			return r, nil
		}
		if a.Key+".json" != name {
			return r, nil
		}
		r.refs, r.ok = g.actionRefs(ctx, a)
	case dirFailures:
		f, err := readFailure(p)
		if err != nil {
			return r, nil
		}
		r.refs.blobs, r.ok = []string{f.Log.Encoded()}, true
	case dirWeak:
		r.ok = true
	}
	return r, nil
}

// actionRefs lists what a keeps alive; ok is false when its tree cannot be read.
func (g *gcRun) actionRefs(ctx context.Context, a *Action) (refs, bool) {
	var r refs
	for _, d := range a.blobs() {
		if _, err := checkDigest(d); err != nil {
			return r, false
		}
		r.blobs = append(r.blobs, d.Encoded())
	}
	if a.Tree == "" {
		return r, true
	}
	t, err := g.tree(ctx, a.Tree)
	if err != nil {
		return r, false
	}
	r.checkouts = append(r.checkouts, a.Tree.Encoded())
	for _, e := range t.Entries {
		if e.Type == tree.File {
			h := e.Digest.Encoded()
			r.blobs = append(r.blobs, h)
			r.files = append(r.files, fileObjName(h, e.Mode, e.UID, e.GID))
		}
	}
	return r, true
}

// tree reads a manifest without adding it to any lease: GC must never enter a
// shared section, which would wait for its own exclusive one.
func (g *gcRun) tree(ctx context.Context, d digest.Digest) (*tree.Tree, error) {
	if t, ok := g.trees[d]; ok {
		return t, nil
	}
	t, err := g.s.getTree(ctx, d)
	if err != nil {
		return nil, err
	}
	g.trees[d] = t
	return t, nil
}

// chooseRecords returns the records to drop: those that cannot be read, weak
// records beyond weakCap, and, once the store would exceed maxSize (when it is
// not negative), every record less recently used. What the leases hold counts
// first, as it cannot be removed.
func (g *gcRun) chooseRecords(recs []*record, maxSize int64) []*record {
	sc := g.sc
	live := map[inode]bool{}
	var size int64
	mark := func(ins []inode) int64 {
		var add int64
		for _, in := range ins {
			if !live[in] {
				live[in] = true
				add += sc.usage[in]
			}
		}
		return add
	}
	var fixed []inode
	for in := range sc.fixed {
		fixed = append(fixed, in)
	}
	size += mark(fixed)
	size += mark(g.keptInodes())

	var drop []*record
	full := false
	weak := 0
	for _, r := range recs {
		if strings.HasPrefix(r.rel, dirWeak+"/") {
			if weak++; weak > weakCap {
				drop = append(drop, r)
				continue
			}
		}
		if full || !r.ok {
			drop = append(drop, r)
			continue
		}
		ins := g.refInodes(r.refs)
		if in, ok := sc.records[r.rel]; ok {
			ins = append(ins, in)
		}
		var add int64
		seen := map[inode]bool{}
		for _, in := range ins {
			if !live[in] && !seen[in] {
				seen[in] = true
				add += sc.usage[in]
			}
		}
		if maxSize >= 0 && size+add > maxSize {
			full = true
			drop = append(drop, r)
			continue
		}
		size += mark(ins)
		g.keep(r.refs)
	}
	return drop
}

// refInodes returns the inodes of what r names, as the scan found them.
func (g *gcRun) refInodes(r refs) []inode {
	var ins []inode
	for _, h := range r.blobs {
		if in, ok := g.sc.blobs[h]; ok {
			ins = append(ins, in)
		}
	}
	for _, n := range r.files {
		if in, ok := g.sc.files[n]; ok {
			ins = append(ins, in)
		}
	}
	for _, h := range r.checkouts {
		ins = append(ins, g.sc.coInodes[h]...)
	}
	return ins
}

// keptInodes returns the inodes of everything kept so far.
func (g *gcRun) keptInodes() []inode {
	var ins []inode
	for h := range g.keepBlob {
		if in, ok := g.sc.blobs[h]; ok {
			ins = append(ins, in)
		}
	}
	for h := range g.keepFileHex {
		for _, n := range g.sc.filesByHex[h] {
			ins = append(ins, g.sc.files[n])
		}
	}
	for n := range g.keepFile {
		if in, ok := g.sc.files[n]; ok {
			ins = append(ins, in)
		}
	}
	for h := range g.keepCO {
		ins = append(ins, g.sc.coInodes[h]...)
	}
	return ins
}

func (g *gcRun) keep(r refs) {
	for _, h := range r.blobs {
		g.keepBlob[h] = true
	}
	for _, n := range r.files {
		g.keepFile[n] = true
	}
	for _, h := range r.checkouts {
		g.keepCO[h] = true
	}
}

// keepLeased keeps what a lease line names: the content hex in every form, and
// for a tree its files too.
func (g *gcRun) keepLeased(ctx context.Context, kind leaseKind, hex string) {
	g.leased[hex] = true
	g.keepBlob[hex], g.keepFileHex[hex], g.keepCO[hex] = true, true, true
	if kind == kindBlob {
		return
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, hex)
	if kind == kindUnknown {
		switch g.looksLikeTree(hex) {
		case errNoBlob:
			g.pending[hex] = kind
			return
		case errNotTree:
			return
		}
	}
	t, err := g.tree(ctx, d)
	if err != nil {
		// Not there yet (a tree leased before it is pushed): try again at the
		// next catch-up.
		g.pending[hex] = kind
		return
	}
	delete(g.pending, hex)
	for _, e := range t.Entries {
		if e.Type == tree.File {
			h := e.Digest.Encoded()
			g.keepBlob[h], g.keepFileHex[h] = true, true
		}
	}
}

var (
	errNoBlob  = errors.New("no blob")
	errNotTree = errors.New("not a tree")
)

// looksLikeTree tells a tree manifest from other content by how its
// canonical encoding starts; nil means it does.
func (g *gcRun) looksLikeTree(hex string) error {
	f, err := os.Open(g.s.blobPath(hex))
	if err != nil {
		return errNoBlob
	}
	defer f.Close()
	prefix := []byte(`{"entries":`)
	b := make([]byte, len(prefix))
	if n, _ := f.ReadAt(b, 0); n != len(b) || !bytes.Equal(b, prefix) {
		return errNotTree
	}
	return nil
}

// readLeases reads the lines added to the leases since the last call. At the
// first call (first) a lease whose file is not locked is dead and ignored;
// later calls treat every new lease as live, since the lease of a process
// that dies after GC started keeps nothing past this GC.
func (g *gcRun) readLeases(ctx context.Context, first bool) error {
	dir := filepath.Join(g.s.dir, dirLeases)
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range des {
		name := de.Name()
		off, seen := g.leaseOff[name]
		if off < 0 {
			continue
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			continue // released
		}
		if first && !seen && unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB) == nil {
			f.Close()
			g.leaseOff[name] = -1
			continue
		}
		var buf bytes.Buffer
		_, err = buf.ReadFrom(&offsetReader{f: f, off: off})
		f.Close()
		if err != nil {
			return err
		}
		b := buf.Bytes()
		end := bytes.LastIndexByte(b, '\n') + 1 // a line being written is read next time
		for _, line := range bytes.Split(b[:end], []byte{'\n'}) {
			if len(line) != 2+64 || line[1] != ' ' {
				continue
			}
			hex := string(line[2:])
			if !tree.IsSHA256(digest.Digest("sha256:" + hex)) {
				continue
			}
			g.keepLeased(ctx, leaseKind(line[0]), hex)
		}
		g.leaseOff[name] = off + int64(end)
	}
	return nil
}

// offsetReader reads f from off on.
type offsetReader struct {
	f   *os.File
	off int64
}

func (r *offsetReader) Read(p []byte) (int, error) {
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	return n, err
}

// catchUp keeps what leases and records added since the last look refer to.
// Under the exclusive lock it sees everything writers have done.
func (g *gcRun) catchUp(ctx context.Context) error {
	if err := g.readLeases(ctx, false); err != nil {
		return err
	}
	for hex, kind := range g.pending {
		g.keepLeased(ctx, kind, hex)
	}
	for _, dir := range []string{dirActions, dirFailures} {
		inos, err := readDirInodes(filepath.Join(g.s.dir, dir))
		if err != nil {
			return err
		}
		for name, ino := range inos {
			rel := dir + "/" + name
			if g.recIno[rel] == ino {
				continue
			}
			g.recIno[rel] = ino
			r, err := g.readRecord(ctx, rel, ino)
			if err != nil {
				return err
			}
			if r != nil {
				g.keep(r.refs)
			}
		}
	}
	return nil
}

// dropRecords removes the records chosen to go that nobody replaced or used
// since GC read them (those keep what they refer to after all), until end,
// and returns the records left. An action whose tree a live lease holds is in
// use too: a build's lookup marks a record it used in the last minute used
// only through its lease (see GetAction).
func (g *gcRun) dropRecords(drop []*record, end time.Time, stats *GCStats) ([]*record, error) {
	now := map[string]uint64{}
	for _, dir := range []string{dirActions, dirFailures, dirWeak} {
		inos, err := readDirInodes(filepath.Join(g.s.dir, dir))
		if err != nil {
			return drop, err
		}
		for name, ino := range inos {
			now[dir+"/"+name] = ino
		}
	}
	for len(drop) > 0 && time.Now().Before(end) {
		r := drop[len(drop)-1]
		drop = drop[:len(drop)-1]
		p := filepath.Join(g.s.dir, filepath.FromSlash(r.rel))
		var st unix.Stat_t
		inUse := len(r.refs.checkouts) > 0 && g.leased[r.refs.checkouts[0]]
		if inUse || now[r.rel] != r.ino || unix.Lstat(p, &st) != nil || st.Mtim != r.mtime {
			g.keep(r.refs)
			continue
		}
		if err := removeIfExists(p); err != nil {
			return drop, err
		}
		switch {
		case strings.HasPrefix(r.rel, dirActions+"/"):
			stats.ActionsRemoved++
		case strings.HasPrefix(r.rel, dirFailures+"/"):
			stats.FailuresRemoved++
		default:
			stats.WeakRemoved++
		}
	}
	return drop, nil
}

// candidate is an object the scan found and nothing kept when GC chose.
type candidate struct {
	kind byte // 'b' blob, 'f' file object, 'c' checkout
	name string
	in   inode
}

func (g *gcRun) candidates() []candidate {
	var out []candidate
	for h, in := range g.sc.checkouts {
		out = append(out, candidate{'c', h, in})
	}
	for h, in := range g.sc.blobs {
		out = append(out, candidate{'b', h, in})
	}
	for n, in := range g.sc.files {
		out = append(out, candidate{'f', n, in})
	}
	return out
}

func (g *gcRun) kept(c candidate) bool {
	switch c.kind {
	case 'c':
		return g.keepCO[c.name]
	case 'b':
		return g.keepBlob[c.name]
	}
	hex, _, _, _, ok := parseFileObjName(c.name)
	return g.keepFile[c.name] || (ok && g.keepFileHex[hex])
}

func (g *gcRun) path(c candidate) string {
	switch c.kind {
	case 'c':
		return g.s.checkoutPath(c.name)
	case 'b':
		return g.s.blobPath(c.name)
	}
	return filepath.Join(g.s.dir, dirFiles, c.name[:min(2, len(c.name))], c.name)
}

// sweep deletes, until end, the candidates that are still not kept and are
// still the inode the scan saw (writers only put objects in place in shared
// sections, so under the exclusive lock a path cannot change between the check
// and the removal), and returns the candidates left. A checkout is renamed into
// trash, to be removed after the lock is released.
func (g *gcRun) sweep(cands []candidate, end time.Time, trash string, stats *GCStats) ([]candidate, error) {
	for len(cands) > 0 && time.Now().Before(end) {
		c := cands[len(cands)-1]
		cands = cands[:len(cands)-1]
		if g.kept(c) {
			continue
		}
		p := g.path(c)
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || (inode{uint64(st.Dev), st.Ino}) != c.in {
			continue
		}
		switch c.kind {
		case 'c':
			if err := os.Rename(p, filepath.Join(trash, c.name)); err != nil {
				return cands, err
			}
			stats.CheckoutsRemoved++
		case 'b':
			if err := removeIfExists(p); err != nil {
				return cands, err
			}
			stats.BlobsRemoved++
		default:
			if err := removeIfExists(p); err != nil {
				return cands, err
			}
			stats.FilesRemoved++
		}
	}
	return cands, nil
}

// readDirInodes lists dir with the inode numbers readdir reports (which GC
// compares only with each other: on overlayfs they need not be st_ino).
func readDirInodes(dir string) (map[string]uint64, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]uint64{}
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(int(f.Fd()), buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "getdents", Path: dir, Err: err}
		}
		if n <= 0 {
			return out, nil
		}
		// struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, name.
		for off := 0; off+19 <= n; {
			ino := binary.NativeEndian.Uint64(buf[off:])
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			if reclen <= 19 || off+reclen > n {
				return nil, fmt.Errorf("getdents %s: malformed record", dir)
			}
			name := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				out[s] = ino
			}
			off += reclen
		}
	}
}

// sweepUnheld removes the files in dir nobody holds a flock on: the leases of
// dead processes, and key lock files (lockPath notices the removal).
func (s *Store) sweepUnheld(dir string) error {
	des, err := os.ReadDir(filepath.Join(s.dir, dir))
	if err != nil {
		return err
	}
	for _, de := range des {
		p := filepath.Join(s.dir, dir, de.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil && sameFile(f, p) {
			os.Remove(p)
		}
		f.Close()
	}
	return nil
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// emptyDir removes everything inside dir.
func emptyDir(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range des {
		if err := forceRemoveAll(filepath.Join(dir, de.Name())); err != nil {
			return err
		}
	}
	return nil
}
