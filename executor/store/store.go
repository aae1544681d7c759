package store

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Sentinel errors, wrapped with the object or key they concern.
var (
	// ErrNotFound reports a missing blob, tree, action or weak entry.
	ErrNotFound = errors.New("not found in store")
	// ErrCorrupt reports an object whose bytes or size do not match its digest.
	ErrCorrupt = errors.New("corrupt object in store")
	// ErrInvalidKey reports an action or lock key that cannot name a file.
	ErrInvalidKey = errors.New("invalid store key")
	// ErrUnsupported reports a file type or overlayfs feature the store cannot record.
	ErrUnsupported = errors.New("unsupported by store")
	// ErrClosed reports use of a Store after Close.
	ErrClosed = errors.New("store closed")
)

// Store is a content-addressed store and action cache rooted at one directory.
// Its methods are safe for concurrent use by goroutines and by other processes that
// open the same directory.
type Store struct {
	dir      string
	root     bool // euid == 0: file objects get their owners
	readOnly bool // opened on a read-only filesystem: no session, no writes

	mu      sync.Mutex
	session string   // tmp/<session>, made on first use, locked until Close
	lockf   *os.File // holds the flock on session
	closed  bool
	trees   treeCache

	gate gate

	discards sync.WaitGroup // Discard's removals still running
	removing chan struct{}  // bounds them

	// afterMark, when set (by tests), runs in GC between choosing what to
	// delete and deleting it: where a writer racing with GC must not lose.
	afterMark func()
}

const (
	dirBlobs      = "blobs/sha256"
	dirFiles      = "files"
	dirActions    = "actions"
	dirWeak       = "weak"
	dirFailures   = "failures"
	dirLeases     = "leases"
	dirState      = "state"
	dirCheckouts  = "checkouts"
	dirLocks      = "locks"
	dirKeyLocks   = "locks/keys"
	dirTmp        = "tmp"
	dirQuarantine = "quarantine"
	gcLockName    = "locks/gc.lock"
	gcIntentName  = "locks/gc.intent"
	gcRunName     = "locks/gc.run"
	sessionPrefix = "s-"
)

// Open opens the store in dir, creating the layout if it is missing, and removes the
// temporary files of writers that died (session directories under tmp/ whose lock is
// free). The Store holds a lock on its own session directory, made on its first
// write, until Close.
//
// A store on a read-only filesystem (or one this user may read but not write) opens
// read-only: lookups, checkouts that already exist and fully cached builds work,
// and every write fails with an error wrapping ErrReadOnly.
func Open(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if err := private(abs); err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	s := &Store{dir: abs, root: os.Geteuid() == 0, removing: make(chan struct{}, 2)}
	for _, d := range []string{dirBlobs, dirFiles, dirActions, dirWeak, dirFailures, dirLeases, dirCheckouts, dirKeyLocks, dirTmp, dirQuarantine} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			if !readOnlyErr(err) {
				return nil, fmt.Errorf("open store %s: %w", abs, err)
			}
			s.readOnly = true
		}
	}
	if unix.Access(filepath.Join(abs, dirTmp), unix.W_OK) != nil {
		s.readOnly = true
	}
	if s.readOnly {
		if _, err := os.Stat(filepath.Join(abs, dirActions)); err != nil {
			return nil, fmt.Errorf("open store %s: read-only and not a store: %w", abs, err)
		}
		return s, nil
	}
	if _, err := s.sweepTmp(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	if err := s.migrate(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	if err := s.openGate(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	return s, nil
}

// ErrReadOnly is wrapped by every write to a store opened read-only.
var ErrReadOnly = errors.New("store is read-only")

func readOnlyErr(err error) bool {
	return errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
}

// ReadOnly reports whether the store was opened read-only.
func (s *Store) ReadOnly() bool { return s.readOnly }

// MkdirTemp creates a fresh directory for a writer's scratch work (overlay upper
// directories, logs, staging) in the store's session, on the store's filesystem so
// that committing hardlinks instead of copying. It goes with the session: at Close,
// or at the next Open after a crash.
func (s *Store) MkdirTemp(prefix string) (string, error) {
	session, err := s.sessionDir()
	if err != nil {
		return "", err
	}
	return os.MkdirTemp(session, prefix)
}

// Discard removes dir, made by MkdirTemp, in the background: a stage's
// working directory of thousands of files need not hold up the nodes that
// wait for its result. Close waits for every removal, and removes whatever one
// could not.
func (s *Store) Discard(dir string) {
	s.discards.Add(1)
	go func() {
		defer s.discards.Done()
		s.removing <- struct{}{}
		defer func() { <-s.removing }()
		forceRemoveAll(dir)
	}()
}

// sessionDir returns the Store's session directory, creating it on first use:
// a store that only reads (a fully cached build, a compile-cache hit) never
// makes one.
func (s *Store) sessionDir() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.readOnly:
		return "", fmt.Errorf("store %s: %w", s.dir, ErrReadOnly)
	case s.closed:
		return "", ErrClosed
	case s.session == "":
		if err := s.newSession(); err != nil {
			return "", fmt.Errorf("store %s: %w", s.dir, err)
		}
	}
	return s.session, nil
}

// ErrNotPrivate is wrapped when the store directory belongs to another user.
var ErrNotPrivate = errors.New("store directory belongs to another user")

// private creates dir with mode 0700, or makes an existing one 0700, and
// refuses one owned by another user. A store holds what builds produced,
// setuid-root binaries among them, so no other local user may traverse it
// (containerd and Bazel keep theirs private the same way).
func private(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	// A link is followed only if its owner could have made the store anyway:
	// one another user planted where the store is looked for (in /tmp, say)
	// would have strata chmod and fill a directory of the link's choosing.
	var lst unix.Stat_t
	if err := unix.Lstat(dir, &lst); err != nil {
		return err
	}
	if lst.Mode&unix.S_IFMT == unix.S_IFLNK && int(lst.Uid) != os.Geteuid() && lst.Uid != 0 {
		return fmt.Errorf("%w: it is a symbolic link of uid %d; use a --cache-dir of your own", ErrNotPrivate, lst.Uid)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w (uid %d): strata keeps its store private; use a --cache-dir of your own", ErrNotPrivate, st.Uid)
	}
	if st.Mode&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil && !errors.Is(err, unix.EROFS) {
			return err
		}
	}
	return nil
}

// Dir returns the absolute directory of the store.
func (s *Store) Dir() string { return s.dir }

// Close releases the Store's session directory and removes it. Locks returned by
// LockKey, and leases, are independent of Close and must be released by their
// callers.
func (s *Store) Close() error {
	s.discards.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.readOnly {
		return nil
	}
	var err error
	if s.session != "" {
		err = forceRemoveAll(s.session)
		s.lockf.Close()
	}
	s.gate.close()
	if err != nil {
		return fmt.Errorf("close store %s: %w", s.dir, err)
	}
	return nil
}

// newSession creates tmp/s-<random> and holds an exclusive flock on it. A sweeper in
// another process may take the lock between mkdir and flock and remove the directory;
// then the identity check fails and another name is tried.
func (s *Store) newSession() error {
	for range 10 {
		name := filepath.Join(s.dir, dirTmp, sessionPrefix+rand.Text())
		if err := os.Mkdir(name, 0o700); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return err
		}
		f, err := os.Open(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				continue
			}
			return fmt.Errorf("lock %s: %w", name, err)
		}
		if !sameFile(f, name) {
			f.Close()
			continue
		}
		s.session, s.lockf = name, f
		return nil
	}
	return errors.New("cannot create a session directory in tmp/")
}

// sweepTmp removes every entry of tmp/ that no live Store holds and returns how many
// it removed.
func (s *Store) sweepTmp() (int, error) {
	tmp := filepath.Join(s.dir, dirTmp)
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		p := filepath.Join(tmp, e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), sessionPrefix) {
			// Not a session: nothing writes here directly.
			if err := forceRemoveAll(p); err != nil {
				return n, err
			}
			n++
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return n, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			continue // held by a live writer
		}
		err = forceRemoveAll(p)
		f.Close()
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// tempFile creates a new file in the session directory.
func (s *Store) tempFile(pattern string) (*os.File, error) {
	session, err := s.sessionDir()
	if err != nil {
		return nil, err
	}
	return os.CreateTemp(session, pattern)
}

// tempName returns a fresh path in the session directory without creating it.
func (s *Store) tempName(prefix string) (string, error) {
	session, err := s.sessionDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(session, prefix+rand.Text()), nil
}

// ensureShard creates the shard directory dir if needed, syncing its parent when it
// was created.
func ensureShard(dir string) error {
	parent, err := makeShard(dir)
	if err != nil || parent == "" {
		return err
	}
	return syncDir(parent)
}

// makeShard creates the shard directory dir if needed. When it did, it returns
// dir's parent, which must be synced before anything placed in dir is relied on.
func makeShard(dir string) (string, error) {
	err := os.Mkdir(dir, 0o755)
	if err == nil {
		return filepath.Dir(dir), nil
	}
	if errors.Is(err, fs.ErrExist) {
		return "", nil
	}
	return "", err
}

// syncTogether runs the syncs at once. On a journaling filesystem (ext4, xfs)
// fsyncs that overlap share one journal commit and one cache flush, where one
// after another each pays for its own: committing a one-file tree made eight
// in turn, ~0.3 ms each on the disks here, a tenth of a trivial stage's cost.
func syncTogether(syncs ...func() error) error {
	switch len(syncs) {
	case 0:
		return nil
	case 1:
		return syncs[0]()
	}
	errs := make([]error, len(syncs))
	var wg sync.WaitGroup
	for i, f := range syncs[1:] {
		wg.Go(func() { errs[i+1] = f() })
	}
	errs[0] = syncs[0]()
	wg.Wait()
	return errors.Join(errs...)
}

// dirSyncs returns a sync of each directory named, for syncTogether; empty
// names are skipped.
func dirSyncs(dirs ...string) []func() error {
	var syncs []func() error
	for _, d := range dirs {
		if d != "" {
			syncs = append(syncs, func() error { return syncDir(d) })
		}
	}
	return syncs
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// openFile opens the file p read-only with the extra flags. os.Open would also
// try (and fail) to register a regular file with the network poller, four
// more system calls a file; a cached build reads a record per node, and a
// commit opens every file of the tree.
func openFile(p string, flags int) (*os.File, error) {
	fd, err := openFD(p, flags)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), p), nil
}

// openFD is openFile's descriptor alone.
func openFD(p string, flags int) (int, error) {
	for {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
		if err == unix.EINTR {
			continue // as os.Open does (a FUSE or NFS store)
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: p, Err: err}
		}
		return fd, nil
	}
}

// readRecord reads the record at p, sized by one fstat, which it returns too
// (Ino 0 when p could not be opened), with the file's birth time: one read
// for the whole file where a decoder would read it in pieces until EOF (a
// filesystem that returns less reads on), through a bare descriptor (os.File
// asks the kernel for its flags).
func readRecord(p string) ([]byte, recordStat, error) {
	var st recordStat
	fd, err := openFD(p, 0)
	if err != nil {
		return nil, st, err
	}
	defer unix.Close(fd)
	if st, err = statRecord(fd, "", unix.AT_EMPTY_PATH); err != nil {
		return nil, recordStat{}, &fs.PathError{Op: "fstat", Path: p, Err: err}
	}
	b := make([]byte, 0, st.Size+1) // +1: a file that grew fills the buffer
	for {
		n, err := unix.Read(fd, b[len(b):cap(b)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, st, &fs.PathError{Op: "read", Path: p, Err: err}
		}
		b = b[:len(b)+n]
		if n == 0 {
			return b, st, nil
		}
		if len(b) < cap(b) && int64(len(b)) >= st.Size {
			return b, st, nil // all fstat promised, and a short read: the end
		}
		if len(b) == cap(b) {
			b = slices.Grow(b, 4096)
		}
	}
}

// recordStat is a record file's fstat and its birth time (ns since the epoch,
// 0 where the filesystem keeps none), from one statx.
type recordStat struct {
	unix.Stat_t
	Birth int64
}

// statRecord is statx of name in the directory dirfd (flags as statx's).
func statRecord(dirfd int, name string, flags int) (recordStat, error) {
	var x unix.Statx_t
	if err := unix.Statx(dirfd, name, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x); err != nil {
		return recordStat{}, err
	}
	ts := func(t unix.StatxTimestamp) unix.Timespec { return unix.Timespec{Sec: t.Sec, Nsec: int64(t.Nsec)} }
	st := recordStat{Stat_t: unix.Stat_t{
		Dev: unix.Mkdev(x.Dev_major, x.Dev_minor), Ino: x.Ino, Nlink: uint64(x.Nlink), Mode: uint32(x.Mode),
		Uid: x.Uid, Gid: x.Gid, Size: int64(x.Size), Atim: ts(x.Atime), Mtim: ts(x.Mtime), Ctim: ts(x.Ctime),
	}}
	if x.Mask&unix.STATX_BTIME != 0 {
		st.Birth = x.Btime.Sec*1e9 + int64(x.Btime.Nsec)
	}
	return st, nil
}

// stamp is the identity of the record of key that st describes.
func (st recordStat) stamp(key string) ActionStamp {
	return ActionStamp{Key: key, Ino: st.Ino, Size: st.Size, Birth: st.Birth}
}

// isFile reports whether the file at name is still the one st describes.
func isFile(name string, st *unix.Stat_t) bool {
	var now unix.Stat_t
	return unix.Stat(name, &now) == nil && now.Dev == st.Dev && now.Ino == st.Ino
}

// sameFile reports whether the open file f is still the file at name.
func sameFile(f *os.File, name string) bool {
	var st unix.Stat_t
	return unix.Fstat(int(f.Fd()), &st) == nil && isFile(name, &st)
}

// forceRemoveAll removes p like os.RemoveAll, first making directories writable so
// that read-only checkouts can be removed by their non-root owner.
func forceRemoveAll(p string) error {
	err := os.RemoveAll(p)
	if err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// validKey reports whether key can name a file: 1 to 200 characters from
// [A-Za-z0-9._:+=-], not starting with a dot.
func validKey(key string) error {
	if key == "" || len(key) > 200 || key[0] == '.' {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	for _, c := range key {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("._:+=-", c):
		default:
			return fmt.Errorf("%w: %q", ErrInvalidKey, key)
		}
	}
	return nil
}
