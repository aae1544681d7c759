package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Lease keeps the objects added to it from GC until it is released or its
// process dies. It is a file under leases/ that its process holds an exclusive
// flock on and appends a line to for each object: "<kind> <hex>", where kind is
// t (a tree manifest: also its files and its checkout), b (a blob or file
// content) or ? (not known: GC looks at the blob to see whether it is a tree).
// A Lease is safe for concurrent use.
type Lease struct {
	s    *Store
	name string
	path string // "" for the lease of a read-only store, which pins nothing

	mu       sync.Mutex
	f        *os.File
	seen     map[string]bool // "<kind> <hex>" already in the file
	released bool
}

// leaseKind says what a leased digest is, and so what GC keeps for it.
type leaseKind byte

const (
	kindTree    leaseKind = 't'
	kindBlob    leaseKind = 'b'
	kindUnknown leaseKind = '?'
)

// NewLease creates a lease named name (a key, see LockKey; it only tells leases
// apart in leases/) owned by this process. The kernel releases it when the
// process dies, so a crashed build pins nothing for long. On a read-only store
// the lease pins nothing: nothing there can be collected by this process.
func (s *Store) NewLease(ctx context.Context, name string) (*Lease, error) {
	if err := validKey(name); err != nil {
		return nil, fmt.Errorf("store %s: new lease: %w", s.dir, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := &Lease{s: s, name: name, seen: map[string]bool{}}
	if s.readOnly {
		return l, nil
	}
	// GC removes a lease file it can lock, taking it for a dead process's. The
	// file is made in leases/ and then locked; if GC took it in between, the
	// file at the name is no longer ours and another name is tried (as
	// sessions are made).
	var f *os.File
	var final string
	for range 10 {
		final = filepath.Join(s.dir, dirLeases, name+"."+rand.Text())
		var err error
		f, err = os.OpenFile(final, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("store %s: new lease: %w", s.dir, err)
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil && sameFile(f, final) {
			break
		}
		f.Close()
		f = nil
	}
	if f == nil {
		return nil, fmt.Errorf("store %s: new lease: leases/ is being swept; try again", s.dir)
	}
	l.f, l.path = f, final
	return l, nil
}

// Name returns the name the lease was created with.
func (l *Lease) Name() string { return l.name }

type leaseKey struct{}

// WithLease returns a context whose store calls add what they return or create
// to l (see the package documentation for which calls).
func WithLease(ctx context.Context, l *Lease) context.Context {
	return context.WithValue(ctx, leaseKey{}, l)
}

// errReleased is returned when a released lease is used.
var errReleased = errors.New("lease already released")

// Add adds the objects ds to the lease: from its return on, GC keeps them
// while the lease lives. A tree manifest keeps its files and its checkout too.
// Add does not check that the objects exist; one that is not in the store yet
// is kept once it arrives, and one GC removed before Add stays removed (look it
// up after Add, with Exists).
func (l *Lease) Add(ctx context.Context, ds ...digest.Digest) error {
	hexes := make([]string, 0, len(ds))
	for _, d := range ds {
		hex, err := checkDigest(d)
		if err != nil {
			return fmt.Errorf("lease %s: %w", l.name, err)
		}
		hexes = append(hexes, hex)
	}
	release, err := l.s.shared(ctx)
	if err != nil {
		return err
	}
	defer release()
	return l.add(kindUnknown, hexes...)
}

// add appends the objects to the lease file in one write; the caller is in a
// shared section (see Store.shared), so GC sees the lines before it deletes.
func (l *Lease) add(kind leaseKind, hexes ...string) error {
	return l.addSets(leaseSet{kind, hexes})
}

// leaseSet is objects of one kind to add to a lease.
type leaseSet struct {
	kind  leaseKind
	hexes []string
}

// addSets is add for objects of several kinds, still in one write.
func (l *Lease) addSets(sets ...leaseSet) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return fmt.Errorf("lease %s: %w", l.name, errReleased)
	}
	if l.path == "" {
		return nil
	}
	var b strings.Builder
	for _, set := range sets {
		for _, h := range set.hexes {
			line := string(set.kind) + " " + h
			if l.seen[line] {
				continue
			}
			l.seen[line] = true
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	if b.Len() == 0 {
		return nil
	}
	// No fsync: a lease lives no longer than its process, and a crash ends both.
	if _, err := l.f.WriteString(b.String()); err != nil {
		return fmt.Errorf("lease %s: %w", l.name, err)
	}
	return nil
}

// has reports whether every one of the objects is already in the lease.
func (l *Lease) has(kind leaseKind, hexes ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return false
	}
	for _, h := range hexes {
		if !l.seen[string(kind)+" "+h] {
			return false
		}
	}
	return true
}

// live reports whether the lease can still pin objects.
func (l *Lease) live() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.released
}

// Release ends the lease: GC may then remove whatever only it kept. Releasing
// twice is a no-op.
func (l *Lease) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	l.released = true
	if l.path == "" {
		return nil
	}
	err := os.Remove(l.path)
	l.f.Close()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release lease %s: %w", l.name, err)
	}
	return nil
}

// leaseOf returns the lease a call made with ctx adds its objects to: the
// context's (see WithLease), else nil.
func (s *Store) leaseOf(ctx context.Context) (*Lease, error) {
	if l, ok := ctx.Value(leaseKey{}).(*Lease); ok && l != nil {
		if l.s.dir != s.dir {
			return nil, fmt.Errorf("store %s: lease %s belongs to store %s", s.dir, l.name, l.s.dir)
		}
		return l, nil
	}
	return nil, nil
}

// pinLocked adds the objects to the call's lease, if any. The caller is in a
// shared section.
func (s *Store) pinLocked(ctx context.Context, kind leaseKind, hexes ...string) error {
	l, err := s.leaseOf(ctx)
	if err != nil || l == nil {
		return err
	}
	return l.add(kind, hexes...)
}

// pin adds the objects to the call's lease in a shared section of its own. An
// object the call then finds in the store stays there while the lease lives.
func (s *Store) pin(ctx context.Context, kind leaseKind, hexes ...string) error {
	l, err := s.leaseOf(ctx)
	if err != nil || l == nil || l.has(kind, hexes...) {
		return err
	}
	release, err := s.shared(ctx)
	if err != nil {
		return err
	}
	defer release()
	return l.add(kind, hexes...)
}
