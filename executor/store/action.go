package store

import (
	"bytes"
	"context"
	"encoding/json"
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

// Action is an action cache entry: the result of building one key.
type Action struct {
	// Key is the node's cache key; it names the entry (see LockKey for the allowed
	// characters).
	Key string `json:"key"`
	// WeakKey is the node's weak key, if any.
	WeakKey string `json:"weak_key,omitempty"`
	// Tree is the digest of the output tree manifest, if the node has one.
	Tree digest.Digest `json:"tree,omitempty"`
	// Log is the digest of the build log blob, if kept.
	Log digest.Digest `json:"log,omitempty"`
	// Outputs names further output blobs (images, archives).
	Outputs map[string]digest.Digest `json:"outputs,omitempty"`
	// Inputs are the trees the result was made from (its input tree, build
	// root, mounted inputs). The entry does not keep them alive, but Verify
	// drops an entry whose inputs turn out corrupt: a result built from bad
	// bytes is bad even when its own objects hash right.
	Inputs []digest.Digest `json:"inputs,omitempty"`
	// Meta is free-form JSON the executor keeps with the entry.
	Meta json.RawMessage `json:"meta,omitempty"`

	stamp ActionStamp // of the record GetAction read a from, or PutAction wrote
}

// Stamp identifies the record GetAction read a from or PutAction wrote it to
// (zero for an Action that is neither): so a build answered later from its
// record knows the result it reports is still the one the store holds.
func (a *Action) Stamp() ActionStamp { return a.stamp }

// blobs returns every blob digest the action refers to directly.
func (a *Action) blobs() []digest.Digest {
	var ds []digest.Digest
	if a.Tree != "" {
		ds = append(ds, a.Tree)
	}
	if a.Log != "" {
		ds = append(ds, a.Log)
	}
	names := make([]string, 0, len(a.Outputs))
	for n := range a.Outputs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ds = append(ds, a.Outputs[n])
	}
	return ds
}

func (s *Store) actionPath(key string) string {
	return filepath.Join(s.dir, dirActions, key+".json")
}

// PutAction records a under a.Key, replacing any previous entry and any
// failure record of the key (see PutFailure). It first checks that every blob
// the entry refers to is present, including the file contents of its tree, and
// fails with an error wrapping ErrNotFound otherwise, so an entry never points
// at a missing object. The entry is written atomically.
func (s *Store) PutAction(ctx context.Context, a *Action) error {
	if err := s.putAction(ctx, a); err != nil {
		return fmt.Errorf("store %s: put action %s: %w", s.dir, a.Key, err)
	}
	return nil
}

func (s *Store) putAction(ctx context.Context, a *Action) error {
	if err := validKey(a.Key); err != nil {
		return err
	}
	if a.WeakKey != "" {
		if err := validKey(a.WeakKey); err != nil {
			return err
		}
	}
	for _, d := range a.blobs() {
		if _, err := checkDigest(d); err != nil {
			return err
		}
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	final := s.actionPath(a.Key)
	st, err := s.writeRecord(ctx, final, b, func() error {
		for _, d := range a.blobs() {
			if !s.HasBlob(d) {
				return fmt.Errorf("blob %s: %w", d, ErrNotFound)
			}
		}
		// A tree committed under a live lease is complete by construction; any
		// other tree has each file blob checked (Bazel: never record an entry that
		// points at a missing blob).
		if a.Tree == "" || s.isComplete(a.Tree) {
			return nil
		}
		t, err := s.getTree(ctx, a.Tree)
		if err != nil {
			return err
		}
		for _, e := range t.Entries {
			if e.Type == tree.File && !s.HasBlob(e.Digest) {
				return fmt.Errorf("tree %s: %s: blob %s: %w", a.Tree, e.Path, e.Digest, ErrNotFound)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	a.stamp = st.stamp(a.Key)
	return removeIfExists(s.failurePath(a.Key))
}

// writeRecord writes data to the record file final (an action, weak or
// failure record) through a temporary file and renames it into place in a
// shared section after check, which makes sure what the record refers to is
// there: GC, which deletes only under the exclusive lock, either sees the
// record or has already deleted what check looks for.
//
// Neither the record nor its directory is synced: what it refers to was
// synced before it, so a crash can only lose it or leave it empty or torn,
// and every reader takes such a record for a miss (the node is built again).
// Syncing the bytes alone would not save that rebuild (the rename is not
// durable either) and cost a journal commit per node.
// It returns the statx of the file renamed into place.
func (s *Store) writeRecord(ctx context.Context, final string, data []byte, check func() error) (recordStat, error) {
	f, err := s.tempFile("r-*")
	if err != nil {
		return recordStat{}, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	var st recordStat
	if err == nil {
		st, err = statRecord(int(f.Fd()), "", unix.AT_EMPTY_PATH)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return recordStat{}, err
	}
	release, err := s.shared(ctx)
	if err != nil {
		return recordStat{}, err
	}
	err = check()
	if err == nil {
		err = os.Rename(tmp, final)
	}
	release()
	return st, err
}

// GetAction returns the entry for key and marks it used now: its modification time is
// the clock GC's LRU order uses, written again unless a lease holds the entry's tree
// (GC keeps such an entry while the lease lives) and it is less than touchEvery old.
// A missing entry, an unreadable one, or one whose tree, log or output blob is gone is
// a miss: the error wraps ErrNotFound and a broken entry is removed. With a lease (see
// WithLease) the entry's tree, log, outputs and inputs are added to it before they are
// looked for.
func (s *Store) GetAction(ctx context.Context, key string) (*Action, error) {
	if err := validKey(key); err != nil {
		return nil, fmt.Errorf("store %s: get action: %w", s.dir, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := s.actionPath(key)
	a, st, err := s.readAction(p, true)
	if err != nil {
		return nil, fmt.Errorf("store %s: action %s: %w", s.dir, key, err)
	}
	if err := s.pinAction(ctx, a); err != nil {
		return nil, fmt.Errorf("store %s: action %s: %w", s.dir, key, err)
	}
	for _, d := range a.blobs() {
		if !s.HasBlob(d) {
			if isFile(p, &st) {
				os.Remove(p)
			}
			return nil, fmt.Errorf("store %s: action %s: blob %s gone: %w", s.dir, key, d, ErrNotFound)
		}
	}
	l, _ := s.leaseOf(ctx)
	if l == nil || a.Tree == "" || time.Since(time.Unix(st.Mtim.Unix())) >= touchEvery {
		if err := s.touch(p); err != nil {
			return nil, fmt.Errorf("store %s: action %s: %w", s.dir, key, err)
		}
	}
	return a, nil
}

// pinAction adds what a refers to to the call's lease, in one shared section.
func (s *Store) pinAction(ctx context.Context, a *Action) error {
	l, err := s.leaseOf(ctx)
	if err != nil || l == nil {
		return err
	}
	var trees, blobs []string
	for _, d := range append([]digest.Digest{a.Tree}, a.Inputs...) {
		if hex, err := checkDigest(d); err == nil {
			trees = append(trees, hex)
		}
	}
	for _, d := range a.blobs() {
		if hex, err := checkDigest(d); err == nil && d != a.Tree {
			blobs = append(blobs, hex)
		}
	}
	if l.has(kindTree, trees...) && l.has(kindBlob, blobs...) {
		return nil
	}
	release, err := s.shared(ctx)
	if err != nil {
		return err
	}
	defer release()
	return l.addSets(leaseSet{kindTree, trees}, leaseSet{kindBlob, blobs})
}

// touchEvery is how stale a record's use time may be before a lookup writes
// it again: a no-op build looks up every node, and a metadata write each cost
// more than the lookup.
const touchEvery = time.Minute

// touch marks the record at p used now, for GC's LRU order.
func (s *Store) touch(p string) error {
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil && !errors.Is(err, fs.ErrNotExist) && !s.readOnly {
		return err
	}
	return nil
}

// readAction reads and decodes the entry at p, returning the fstat of the file
// it read too. A malformed entry is reported as ErrNotFound, and removed when
// remove is set (not by GC's mark phase, which holds no lock that keeps a
// writer from renaming a good entry into place meanwhile).
func (s *Store) readAction(p string, remove bool) (*Action, unix.Stat_t, error) {
	b, st, err := readRecord(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, st.Stat_t, ErrNotFound
		}
		if st.Ino == 0 {
			return nil, st.Stat_t, err // not opened
		}
	}
	var a Action
	if err != nil || json.Unmarshal(b, &a) != nil || validKey(a.Key) != nil {
		if remove && isFile(p, &st.Stat_t) {
			os.Remove(p)
		}
		return nil, st.Stat_t, fmt.Errorf("malformed entry removed: %w", ErrNotFound)
	}
	a.stamp = st.stamp(a.Key)
	return &a, st.Stat_t, nil
}

// RemoveAction deletes the entry for key, if any.
func (s *Store) RemoveAction(key string) error {
	if err := validKey(key); err != nil {
		return err
	}
	if err := os.Remove(s.actionPath(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store %s: remove action %s: %w", s.dir, key, err)
	}
	return nil
}

func (s *Store) weakPath(key string) string {
	return filepath.Join(s.dir, dirWeak, key+".json")
}

// PutWeak records data, which must be valid JSON, as the key inputs of the last build
// of weakKey, replacing the previous record atomically.
func (s *Store) PutWeak(ctx context.Context, weakKey string, data json.RawMessage) error {
	if err := validKey(weakKey); err != nil {
		return fmt.Errorf("store %s: put weak: %w", s.dir, err)
	}
	if !json.Valid(data) {
		return fmt.Errorf("store %s: put weak %s: invalid JSON", s.dir, weakKey)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := s.writeRecord(ctx, s.weakPath(weakKey), bytes.Clone(data), func() error { return nil }); err != nil {
		return fmt.Errorf("store %s: put weak %s: %w", s.dir, weakKey, err)
	}
	return nil
}

// GetWeak returns the record PutWeak last stored for weakKey, or an error wrapping
// ErrNotFound, and marks it used now. GC collects weak records (see the package
// documentation).
func (s *Store) GetWeak(ctx context.Context, weakKey string) (json.RawMessage, error) {
	if err := validKey(weakKey); err != nil {
		return nil, fmt.Errorf("store %s: get weak: %w", s.dir, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.weakPath(weakKey))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store %s: weak %s: %w", s.dir, weakKey, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: weak %s: %w", s.dir, weakKey, err)
	}
	if !json.Valid(b) {
		// Written without a sync: a crash can leave it empty or torn.
		return nil, fmt.Errorf("store %s: weak %s: unreadable: %w", s.dir, weakKey, ErrNotFound)
	}
	// Best effort: the time only orders GC's LRU.
	_ = s.touch(s.weakPath(weakKey))
	return b, nil
}

// ActionInfo describes an action cache entry for listing.
type ActionInfo struct {
	Action
	// LastUsed is when the entry was last written or returned by GetAction.
	LastUsed time.Time
	// Size is the total size in bytes of the distinct blobs the entry refers to: its
	// tree manifest, the tree's file contents, log and outputs.
	Size int64
}

// List returns every action entry, most recently used first.
func (s *Store) List(ctx context.Context) ([]ActionInfo, error) {
	ents, err := s.actionEntries()
	if err != nil {
		return nil, fmt.Errorf("store %s: list: %w", s.dir, err)
	}
	var out []ActionInfo
	for _, ae := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		info := ActionInfo{Action: *ae.a, LastUsed: ae.mtime}
		seen := map[digest.Digest]bool{}
		add := func(d digest.Digest, n int64) {
			if !seen[d] {
				seen[d] = true
				info.Size += n
			}
		}
		for _, d := range ae.a.blobs() {
			if st, err := os.Stat(s.blobPath(d.Encoded())); err == nil {
				add(d, st.Size())
			}
		}
		if ae.a.Tree != "" {
			if t, err := s.getTree(ctx, ae.a.Tree); err == nil {
				for _, e := range t.Entries {
					if e.Type == tree.File {
						add(e.Digest, e.Size)
					}
				}
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// actionEntry is a decoded entry with its modification time.
type actionEntry struct {
	a     *Action
	mtime time.Time
	path  string
}

// actionEntries reads every well-formed entry, most recently used first (ties by key).
func (s *Store) actionEntries() ([]actionEntry, error) {
	dir := filepath.Join(s.dir, dirActions)
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []actionEntry
	for _, de := range des {
		name := de.Name()
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		p := filepath.Join(dir, name)
		a, st, err := s.readAction(p, true)
		if err != nil || a.Key+".json" != name {
			continue
		}
		out = append(out, actionEntry{a: a, mtime: time.Unix(st.Mtim.Unix()), path: p})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].mtime.Equal(out[j].mtime) {
			return out[i].mtime.After(out[j].mtime)
		}
		return out[i].a.Key < out[j].a.Key
	})
	return out, nil
}

// ActionStamp identifies the record an action's result was read from or
// written to: its file, which a new result for the key replaces (records are
// renamed into place, never written over), so an unchanged identity is an
// unchanged result. A file's inode number is reused once it is removed: its
// birth time (where the filesystem keeps one) tells a new file from the old.
// Not its modification or change time: a lookup marks a record used with them.
type ActionStamp struct {
	Key   string `json:"key"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	Birth int64  `json:"birth,omitempty"` // ns since the epoch; 0 where unknown
}

// Unchanged reports whether every stamped record is still the one stamped and
// every blob listed is present: what GetAction would find for those keys,
// without reading the records. It marks the records used, as GetAction does
// under a lease (at most once a touchEvery), so GC's LRU order counts a
// build answered this way.
func (s *Store) Unchanged(ctx context.Context, stamps []ActionStamp, blobs []digest.Digest) bool {
	// Relative to their directories: a no-op build checks hundreds.
	actions, err := openFD(filepath.Join(s.dir, dirActions), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return false
	}
	defer unix.Close(actions)
	for _, a := range stamps {
		if ctx.Err() != nil || validKey(a.Key) != nil {
			return false
		}
		st, err := statRecord(actions, a.Key+".json", 0)
		if err != nil || st.stamp(a.Key) != a {
			return false
		}
		if time.Since(time.Unix(st.Mtim.Unix())) >= touchEvery && s.touch(s.actionPath(a.Key)) != nil {
			return false
		}
	}
	dir, err := openFD(filepath.Join(s.dir, dirBlobs), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return len(blobs) == 0
	}
	defer unix.Close(dir)
	seen := make(map[digest.Digest]bool, len(blobs))
	for _, d := range blobs {
		if seen[d] {
			continue
		}
		seen[d] = true
		hex, err := checkDigest(d)
		if err != nil {
			return false
		}
		var st unix.Stat_t
		if unix.Fstatat(dir, hex[:2]+"/"+hex, &st, 0) != nil || !wholeBlob(d, st.Size) {
			return false
		}
	}
	return true
}
