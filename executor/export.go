package executor

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/output"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/executor/tree"
)

// Export states of an Artifact.
const (
	// ArtifactExported: this build wrote the artifact into the out directory.
	ArtifactExported = "exported"
	// ArtifactCurrent: the out directory already held exactly this artifact,
	// unchanged since strata wrote it.
	ArtifactCurrent = "current"
)

// stampDir is the directory of the out directory where strata keeps what it
// exported (stamp), to tell an untouched artifact from an edited one without
// reading it again.
const stampDir = ".strata"

// exportItem is one finished output node to export.
type exportItem struct {
	node   *plan.Node
	image  string
	name   string
	format output.Format
	result Result
}

// stamp records what strata last exported for an image: each artifact's
// digest and a digest of the identity of every file it wrote (path, inode,
// size, times, mode). Any write to a file changes its ctime, so an artifact
// whose files all still match was not edited.
type stamp struct {
	Artifacts map[string]stampArtifact `json:"artifacts"`
	// Workspace is the workspace the image was built from: a full build of
	// it removes the exports of images it no longer has (prune), and never
	// another workspace's sharing the out directory.
	Workspace string `json:"workspace,omitempty"`
}

type stampArtifact struct {
	Digest digest.Digest `json:"digest"`
	Files  digest.Digest `json:"files"`
	// Tree is the tree exported as a directory (tree and oci outputs).
	Tree digest.Digest `json:"tree,omitempty"`
}

// exporter writes artifacts into the out directory, confined to it: every path
// is resolved through an os.Root, so neither a name nor a symbolic link planted
// in the out directory leads outside it.
type exporter struct {
	st        *store.Store
	root      *os.Root
	euid      int
	workspace string

	stampsMu sync.Mutex
	stamps   *os.File // out/.strata, opened once to read stamps

	sweptMu sync.Mutex
	swept   map[string]bool // directories whose staging leftovers were swept
}

func (x *exporter) close() {
	if x.stamps != nil {
		x.stamps.Close()
	}
	x.root.Close()
}

// openOutDir opens the out directory, creating it. The default, the
// workspace's out/, is opened through the workspace so a symbolic link there
// cannot lead outside the workspace; an explicit directory is the user's
// choice and is opened as given.
func openOutDir(workspace, explicit string) (*os.Root, string, error) {
	if explicit != "" {
		if err := os.MkdirAll(explicit, 0o755); err != nil {
			return nil, "", fmt.Errorf("out dir: %w", err)
		}
		r, err := os.OpenRoot(explicit)
		if err != nil {
			return nil, "", fmt.Errorf("out dir: %w", err)
		}
		return r, explicit, nil
	}
	ws, err := os.OpenRoot(workspace)
	if err != nil {
		return nil, "", fmt.Errorf("out dir: %w", err)
	}
	defer ws.Close()
	if err := ws.Mkdir("out", 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, "", fmt.Errorf("out dir: %w", err)
	}
	r, err := ws.OpenRoot("out")
	if err != nil {
		return nil, "", fmt.Errorf("out dir %s: %w (a symbolic link out of the workspace?)", workspace+"/out", err)
	}
	return r, path.Join(workspace, "out"), nil
}

// exportImage makes out/<image>/ hold exactly items when full (a whole image
// was built), or puts items there beside what is already there otherwise. A
// full export is staged next to the image's directory and swapped in with one
// atomic exchange, so a reader sees the old directory or the new one, never a
// mix, and nothing the build no longer produces is left behind.
func (x *exporter) exportImage(ctx context.Context, image string, items []exportItem, full bool) (map[string]string, error) {
	states := map[string]string{}
	want := make(map[string]digest.Digest, len(items))
	for _, it := range items {
		want[it.name] = it.result.Outputs[it.name].Digest
	}
	c := x.check(image, want)
	old, untouched := c.old, c.untouched
	current := func(it exportItem) bool { return c.current[it.name] }
	if full && c.whole {
		for _, it := range items {
			states[it.name] = ArtifactCurrent
		}
		return states, nil
	}
	parent, base := path.Split(image)
	parent = strings.TrimSuffix(parent, "/")
	if parent == "" {
		parent = "."
	}
	if err := x.root.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	pr, err := x.root.OpenRoot(parent)
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	next := &stamp{Artifacts: map[string]stampArtifact{}}
	if full && old == nil {
		if err := x.unclaimed(image, items); err != nil {
			return nil, err
		}
	}
	if full {
		x.sweepOnce(pr, parent)
		stage := "." + base + stagingMark + rand.Text()
		if err := pr.Mkdir(stage, 0o755); err != nil {
			return nil, err
		}
		defer pr.RemoveAll(stage)
		held, err := holdStaging(pr, stage)
		if err != nil {
			return nil, err
		}
		defer held.Close()
		sr, err := pr.OpenRoot(stage)
		if err != nil {
			return nil, err
		}
		defer sr.Close()
		for _, it := range items {
			var prev *previous
			if untouched[it.name] {
				prev = x.previous(ctx, image, it, old)
			}
			err := x.write(ctx, sr, it.name, it, prev)
			prev.close()
			if err != nil {
				return nil, &itemError{it, fmt.Errorf("export %s/%s: %w", image, it.name, err)}
			}
			states[it.name] = ArtifactExported
		}
		if err := exchange(pr, stage, base); err != nil {
			return nil, fmt.Errorf("export %s: %w", image, err)
		}
	} else {
		if err := pr.MkdirAll(base, 0o755); err != nil {
			return nil, err
		}
		ir, err := pr.OpenRoot(base)
		if err != nil {
			return nil, err
		}
		defer ir.Close()
		if old != nil {
			next = old
		}
		for _, it := range items {
			if old != nil && current(it) {
				states[it.name] = ArtifactCurrent
				continue
			}
			var prev *previous
			if untouched[it.name] {
				prev = x.previous(ctx, image, it, old)
			}
			tmp := "." + it.name + ".tmp-" + rand.Text()
			err := x.write(ctx, ir, tmp, it, prev)
			prev.close()
			if err == nil {
				err = exchange(ir, tmp, it.name)
			}
			ir.RemoveAll(tmp)
			if err != nil {
				return nil, &itemError{it, fmt.Errorf("export %s/%s: %w", image, it.name, err)}
			}
			states[it.name] = ArtifactExported
		}
	}
	for _, it := range items {
		if states[it.name] == ArtifactCurrent {
			continue // untouched: its stamp entry (next is old here) still holds
		}
		files, err := x.identify(image, it.name)
		if err != nil {
			return nil, err
		}
		a := stampArtifact{Digest: it.result.Outputs[it.name].Digest, Files: files}
		if it.format.Directory() {
			a.Tree = it.result.Tree.Digest
		}
		next.Artifacts[it.name] = a
	}
	next.Workspace = x.workspace
	return states, x.writeStamp(image, next)
}

// exportCheck is what out/<image>/ holds, against the artifacts a build wants
// there.
type exportCheck struct {
	old       *stamp          // the image's stamp, nil without one
	untouched map[string]bool // artifact name → its files are as strata wrote them
	current   map[string]bool // untouched, and of the digest wanted
	// whole: the directory holds exactly the artifacts wanted, every one
	// current, nothing else.
	whole bool
}

// check reads image's stamp and tells which of the artifacts wanted (name →
// digest) are already in out/<image>/ as strata exported them.
func (x *exporter) check(image string, want map[string]digest.Digest) exportCheck {
	c := exportCheck{old: x.readStamp(image), untouched: map[string]bool{}, current: map[string]bool{}}
	if c.old == nil {
		return c
	}
	dir, err := x.root.Open(image)
	if err != nil {
		return c
	}
	defer dir.Close()
	entries, err := dir.Readdirnames(-1)
	all := err == nil && len(c.old.Artifacts) == len(want)
	for name, d := range want {
		c.untouched[name] = untouchedIn(dir, name, c.old)
		c.current[name] = c.untouched[name] && c.old.Artifacts[name].Digest == d
		all = all && c.current[name]
	}
	c.whole = all && noStrangers(entries, c.old)
	return c
}

// write puts the artifact of it at name in dir: a copy of a file blob, or a
// directory holding a copy of a tree (tree and oci outputs). Every byte is
// read back through its digest, so corrupt store content is never exported;
// the files of prev (if any) that are the same are linked instead, and read
// through their digests too.
func (x *exporter) write(ctx context.Context, dir *os.Root, name string, it exportItem, prev *previous) error {
	if it.format.Directory() {
		t, err := x.st.GetTree(ctx, it.result.Tree.Digest)
		if err != nil {
			return err
		}
		return x.writeTree(ctx, dir, name, t, prev)
	}
	d, ok := it.result.Outputs[it.name]
	if !ok {
		return fmt.Errorf("the result has no output %q", it.name)
	}
	return x.writeFile(dir, name, d.Digest, -1, 0o644, -1, -1)
}

// writeFile copies the blob d to name (store.BlobReader.CopyTo: a reflink
// where the filesystem has one; the digest is checked either way), owned by
// uid:gid unless uid is negative.
func (x *exporter) writeFile(dir *os.Root, name string, d digest.Digest, size int64, mode os.FileMode, uid, gid int) error {
	src, err := x.st.OpenBlobSize(d, size)
	if err != nil {
		return err
	}
	defer src.Close()
	// Read-write: after a reflink, CopyTo reads dst back through the digest.
	dst, err := dir.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		dst.Close()
		if !ok {
			dir.Remove(name)
		}
	}()
	if err := src.CopyTo(dst); err != nil {
		return err
	}
	if uid >= 0 {
		// Before the mode: chown clears setuid and setgid.
		if err := dst.Chown(uid, gid); err != nil {
			return err
		}
	}
	if err := dst.Chmod(mode); err != nil {
		return err
	}
	ok = true
	return dst.Close()
}

// writeTree recreates t as the directory name: directories, files and
// symbolic links with the manifest's modes, and its owners when strata runs as
// root. A tree with setuid or setgid files is left readable by its owner only,
// so exporting it does not hand them to other users of the machine.
func (x *exporter) writeTree(ctx context.Context, dir *os.Root, name string, t *tree.Tree, prev *previous) error {
	top := os.FileMode(0o755)
	for _, e := range t.Entries {
		if e.Type == tree.File && e.Mode&0o6000 != 0 {
			top = 0o700
		}
	}
	if err := dir.Mkdir(name, 0o700); err != nil {
		return err
	}
	r, err := dir.OpenRoot(name)
	if err != nil {
		return err
	}
	defer r.Close()
	var into dirFDs
	defer into.close()
	var dirs []tree.Entry
	for _, e := range t.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		owned := false
		switch e.Type {
		case tree.Dir:
			if err := r.Mkdir(e.Path, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, e)
		case tree.Symlink:
			if err := r.Symlink(e.Target, e.Path); err != nil {
				return err
			}
		case tree.File:
			// Owners are set through the file's descriptor, not its path again.
			owned = true
			if prev.linkTo(r, &into, e, x.euid == 0) {
				break
			}
			uid, gid := -1, -1
			if x.euid == 0 {
				uid, gid = e.UID, e.GID
			}
			if err := x.writeFile(r, e.Path, e.Digest, e.Size, fs.FileMode(e.Mode&0o777), uid, gid); err != nil {
				return fmt.Errorf("%s: %w", e.Path, err)
			}
		case tree.CharDev, tree.BlockDev, tree.Fifo:
			if x.euid != 0 && e.Type != tree.Fifo {
				return fmt.Errorf("%s: a device node can only be exported as root; a tar, squashfs or ext4 output holds it", e.Path)
			}
			typ := map[tree.Kind]uint32{tree.CharDev: unix.S_IFCHR, tree.BlockDev: unix.S_IFBLK, tree.Fifo: unix.S_IFIFO}[e.Type]
			if err := mknodIn(r, e.Path, typ|e.Mode&0o777, unix.Mkdev(e.Major, e.Minor)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: cannot export entry type %q", e.Path, e.Type)
		}
		if x.euid == 0 && !owned {
			if err := r.Lchown(e.Path, e.UID, e.GID); err != nil {
				return err
			}
		}
		if e.Type != tree.Dir && e.Type != tree.Symlink && e.Mode&0o7000 != 0 {
			// After chown, which clears setuid and setgid.
			if err := r.Chmod(e.Path, unixMode(e.Mode)); err != nil {
				return err
			}
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := r.Chmod(dirs[i].Path, unixMode(dirs[i].Mode)); err != nil {
			return err
		}
	}
	return dir.Chmod(name, top)
}

// mknodIn makes a device node or fifo at name inside r: mknodat in the
// directory opened through the root, so the name cannot lead out of it.
func mknodIn(r *os.Root, name string, mode uint32, dev uint64) error {
	d, err := r.Open(path.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Mknodat(int(d.Fd()), path.Base(name), mode, int(dev)); err != nil {
		return &os.PathError{Op: "mknod", Path: name, Err: err}
	}
	// mknod's mode passes through the umask: a 0666 /dev/null came out 0644.
	if err := unix.Fchmodat(int(d.Fd()), path.Base(name), mode&0o7777, 0); err != nil {
		return &os.PathError{Op: "chmod", Path: name, Err: err}
	}
	return nil
}

// unixMode converts permission bits with setuid, setgid and sticky to an
// os.FileMode.
func unixMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		mode |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// exchange atomically puts the entry tmp of dir at final: the two are swapped
// (renameat2 RENAME_EXCHANGE) and what was at final, now at tmp, is removed.
// When nothing is at final, tmp is renamed without replacing anything.
func exchange(dir *os.Root, tmp, final string) error {
	d, err := dir.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	fd := int(d.Fd())
	for range 3 {
		err = unix.Renameat2(fd, tmp, fd, final, unix.RENAME_EXCHANGE)
		if err == nil {
			return dir.RemoveAll(tmp)
		}
		if !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("exchange %s: %w", final, err)
		}
		err = unix.Renameat2(fd, tmp, fd, final, unix.RENAME_NOREPLACE)
		if err == nil || !errors.Is(err, syscall.EEXIST) {
			return err
		}
		// Another build exported the same image meanwhile: swap with it.
	}
	return fmt.Errorf("exchange %s: %w", final, err)
}

// identify returns the digest of the identity of every file of the exported
// artifact image/name (see identifyIn).
func (x *exporter) identify(image, name string) (digest.Digest, error) {
	dir, err := x.root.Open(image)
	if err != nil {
		return "", err
	}
	defer dir.Close()
	return identifyIn(dir, name)
}

// identifyIn returns the digest of the identity of every file of the artifact
// name in the open directory dir, in the order fs.WalkDir visits them. It
// walks by directory descriptor (one open per directory, never following a
// link), not by path: an os.Root resolves every path component by component,
// which made a no-op build's check of a 300-entry tree output ~1,300 opens.
// name is one path component (an artifact name), so nothing here leaves dir.
func identifyIn(dir *os.File, name string) (digest.Digest, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return "", fmt.Errorf("%q is not an artifact name", name)
	}
	fd := int(dir.Fd())
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", &fs.PathError{Op: "lstat", Path: name, Err: err}
	}
	h := digest.SHA256.Digester()
	w := &identities{w: h.Hash()}
	w.add("", st.Ino, st.Size, st.Mtim.Nano(), st.Ctim.Nano(), st.Mode)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", &fs.PathError{Op: "open", Path: name, Err: err}
		}
		d := os.NewFile(uintptr(cfd), name)
		defer d.Close()
		if err := identifyDir(d, "", w); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
	}
	return h.Digest(), nil
}

// identifyDir adds the identities of the entries under the open directory d,
// named from rel, to w.
func identifyDir(d *os.File, rel string, w *identities) error {
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	slices.Sort(names)
	fd := int(d.Fd())
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		p := path.Join(rel, name)
		w.add(p, st.Ino, st.Size, st.Mtim.Nano(), st.Ctim.Nano(), st.Mode)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		c := os.NewFile(uintptr(cfd), p)
		err = identifyDir(c, p, w)
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// identities writes files' identities to w, one line each; a path holds no
// NUL, which ends it. (A no-op build identifies every exported file: one
// reused buffer, not a Fprintf per file.)
type identities struct {
	w   io.Writer
	buf []byte
}

func (i *identities) add(p string, ino uint64, size, mtime, ctime int64, mode uint32) {
	b := append(i.buf[:0], p...)
	b = append(b, 0)
	b = strconv.AppendUint(b, ino, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, size, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, mtime, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, ctime, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(mode), 8)
	b = append(b, '\n')
	i.w.Write(b)
	i.buf = b
}

// untouchedIn reports whether the artifact name of the image directory dir
// still holds exactly what strata exported there last, whatever that was.
func untouchedIn(dir *os.File, name string, s *stamp) bool {
	a, ok := s.Artifacts[name]
	if !ok {
		return false
	}
	got, err := identifyIn(dir, name)
	return err == nil && got == a.Files
}

// previous is an earlier export of a directory artifact, untouched since
// strata wrote it (see untouched). A file it holds at the same path with the
// same content, mode and owner as the new tree's is hard-linked into the new
// export instead of copied from the store; removing the old directory after
// the swap then frees no blocks for it. Re-exporting a 200-file tree with one
// file changed cost ~45 ms, half of it unlinking the old copies. A link, not a
// move: until the swap the old export stays whole, so a failed export leaves
// it as it was.
type previous struct {
	root    *os.Root
	entries map[string]tree.Entry
	from    dirFDs
	buf     []byte
}

// previous returns the untouched earlier export of it, or nil when there is
// none to take files from.
func (x *exporter) previous(ctx context.Context, image string, it exportItem, s *stamp) *previous {
	a := s.Artifacts[it.name]
	if !it.format.Directory() || a.Tree == "" {
		return nil
	}
	t, err := x.st.GetTree(ctx, a.Tree)
	if err != nil {
		return nil
	}
	root, err := x.root.OpenRoot(path.Join(image, it.name))
	if err != nil {
		return nil
	}
	p := &previous{root: root, entries: make(map[string]tree.Entry, len(t.Entries))}
	for _, e := range t.Entries {
		if e.Type == tree.File {
			p.entries[e.Path] = e
		}
	}
	return p
}

// linkTo links the earlier export's file for e into r at e.Path, when it has
// one with e's content, mode and owner, which it then sets on the file if it
// differs (the owner only with chown). A file that cannot be linked is left
// for the caller to copy.
func (p *previous) linkTo(r *os.Root, into *dirFDs, e tree.Entry, chown bool) bool {
	if p == nil {
		return false
	}
	o, ok := p.entries[e.Path]
	if !ok || o.Digest != e.Digest || o.Size != e.Size || o.Mode != e.Mode || o.UID != e.UID || o.GID != e.GID {
		return false
	}
	dir, base := path.Split(e.Path)
	from, err := p.from.open(p.root, dir)
	if err != nil {
		return false
	}
	to, err := into.open(r, dir)
	if err != nil {
		return false
	}
	if unix.Linkat(from, base, to, base, 0) != nil {
		return false
	}
	if !p.same(to, base, e, chown) {
		unix.Unlinkat(to, base, 0)
		return false
	}
	return true
}

// same reports whether the file base of the directory dir is e: a regular
// file of e's size and digest, which it is then given e's permissions, and
// owner with chown, where they differ. The
// earlier export was untouched when it was identified, but a file replaced
// or written in the moments since must not be taken: it is read through its
// digest like a copy from the store is.
func (p *previous) same(dir int, base string, e tree.Entry, chown bool) bool {
	fd, err := unix.Openat(dir, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != e.Size {
		return false
	}
	if p.buf == nil {
		p.buf = make([]byte, 256<<10)
	}
	// Read into p.buf by hand: io.CopyBuffer would hand the copy to
	// os.File.WriteTo, which allocates a buffer of its own every call.
	v := e.Digest.Verifier()
	var n int64
	for {
		m, err := unix.Read(fd, p.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false
		}
		if m == 0 {
			break
		}
		v.Write(p.buf[:m])
		n += int64(m)
	}
	if n != e.Size || !v.Verified() {
		return false
	}
	reowned := chown && (int(st.Uid) != e.UID || int(st.Gid) != e.GID)
	if reowned && unix.Fchown(fd, e.UID, e.GID) != nil {
		return false
	}
	// chown cleared setuid and setgid; a mode that keeps them is set by the
	// caller after this.
	return (!reowned && st.Mode&0o7777 == e.Mode&0o777) || unix.Fchmod(fd, e.Mode&0o777) == nil
}

func (p *previous) close() {
	if p != nil {
		p.from.close()
		p.root.Close()
	}
}

// dirFDs keeps the directories of a root opened by path, for *at calls.
type dirFDs map[string]*os.File

func (d *dirFDs) open(r *os.Root, dir string) (int, error) {
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if f, ok := (*d)[dir]; ok {
		return int(f.Fd()), nil
	}
	f, err := r.Open(dir)
	if err != nil {
		return -1, err
	}
	if *d == nil {
		*d = dirFDs{}
	}
	(*d)[dir] = f
	return int(f.Fd()), nil
}

func (d dirFDs) close() {
	for _, f := range d {
		f.Close()
	}
}

// noStrangers reports whether the entries of out/<image>/ are only the
// stamped artifacts.
func noStrangers(entries []string, s *stamp) bool {
	for _, e := range entries {
		if _, ok := s.Artifacts[e]; !ok {
			return false
		}
	}
	return len(entries) == len(s.Artifacts)
}

// itemError is an export error of one artifact, reported at its output.
type itemError struct {
	it  exportItem
	err error
}

func (e *itemError) Error() string { return e.err.Error() }
func (e *itemError) Unwrap() error { return e.err }

// holdStaging takes an flock on the staging directory name of r for as long
// as the returned file is open: a staging directory nobody holds was left by
// a build killed while exporting (sweepStaging).
func holdStaging(r *os.Root, name string) (*os.File, error) {
	f, err := r.Open(name)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	return f, nil
}

// stagingMark is in the name of every staging directory of a whole-image
// export (.NAME.tmp-RANDOM, next to out/NAME).
const stagingMark = ".tmp-"

// sweepOnce sweeps the staging directories of the out directory's
// subdirectory parent (r) once per build: at every export it read the whole
// directory, which is quadratic in the images of a build.
func (x *exporter) sweepOnce(r *os.Root, parent string) {
	x.sweptMu.Lock()
	if x.swept == nil {
		x.swept = map[string]bool{}
	}
	first := !x.swept[parent]
	x.swept[parent] = true
	x.sweptMu.Unlock()
	if first {
		sweepStaging(r)
	}
}

// sweepStaging removes the staging directories in r that no build holds
// (holdStaging): a build killed while exporting an image left its whole
// copy next to it, hundreds of megabytes each time, and nothing removed
// them. One made in the last seconds may not be held yet, and stays.
func sweepStaging(r *os.Root) {
	d, err := r.Open(".")
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, n := range names {
		if !strings.HasPrefix(n, ".") || !strings.Contains(n, stagingMark) {
			continue
		}
		fi, err := r.Lstat(n)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < 5*time.Second {
			continue
		}
		f, err := holdStaging(r, n)
		if err != nil {
			continue // held: another build's
		}
		r.RemoveAll(n)
		f.Close()
	}
}

// prune removes the exports of images this workspace exported and no longer
// has (a template instance whose record went, an image renamed): out/ holds
// what the workspace's builds produce, and a script publishing out/* would
// carry an image the spec dropped. Only stamps naming this workspace count:
// another workspace may share the out directory. It returns the images it
// removed.
func (x *exporter) prune(keep map[string]*plan.Image) []string {
	var gone []string
	fs.WalkDir(x.root.FS(), stampDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
			return nil
		}
		image := strings.TrimSuffix(strings.TrimPrefix(p, stampDir+"/"), ".json")
		if _, ok := keep[image]; ok || x.workspace == "" {
			return nil
		}
		if s := x.readStamp(image); s == nil || s.Workspace != x.workspace {
			return nil
		}
		if x.root.RemoveAll(image) == nil && x.root.Remove(p) == nil {
			gone = append(gone, image)
		}
		return nil
	})
	return gone
}

// unclaimed refuses to replace the directory of image when strata has no
// record of exporting it and it holds something strata would not have
// written: a directory of the user's that happens to have the image's name
// was deleted whole. With a record, the directory is strata's, and anything
// added to it goes (it holds exactly what the last build produced). A link
// there is replaced, not followed.
func (x *exporter) unclaimed(image string, items []exportItem) error {
	fi, err := x.root.Lstat(image)
	if errors.Is(err, fs.ErrNotExist) || err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return nil
	}
	if err != nil {
		return err
	}
	where := filepath.Join(x.root.Name(), filepath.FromSlash(image))
	if !fi.IsDir() {
		return fmt.Errorf("export %s: %s is a file strata did not export: move it away, or build into another --out-dir", image, where)
	}
	d, err := x.root.Open(image)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	ours := map[string]bool{}
	for _, it := range items {
		ours[it.name] = true
	}
	slices.Sort(names)
	for _, n := range names {
		if !ours[n] {
			return fmt.Errorf("export %s: %s holds %s, which strata did not export: move it away, or build into another --out-dir", image, where, n)
		}
	}
	return nil
}

func stampPath(image string) string { return path.Join(stampDir, image+".json") }

func (x *exporter) readStamp(image string) *stamp {
	var b []byte
	var err error
	if strings.ContainsRune(image, '/') {
		b, err = x.root.ReadFile(stampPath(image))
	} else {
		// One open by descriptor, not a walk through the root: a no-op build
		// reads every image's stamp.
		dir := x.stampsDir()
		if dir == nil {
			return nil
		}
		fd, oerr := unix.Openat(int(dir.Fd()), image+".json", unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if oerr != nil {
			return nil
		}
		f := os.NewFile(uintptr(fd), image+".json")
		b, err = io.ReadAll(f)
		f.Close()
	}
	if err != nil {
		return nil
	}
	var s stamp
	if json.Unmarshal(b, &s) != nil || s.Artifacts == nil {
		return nil
	}
	return &s
}

// stampsDir returns out/.strata opened, or nil while there is none (an
// export of this build may make it).
func (x *exporter) stampsDir() *os.File {
	x.stampsMu.Lock()
	defer x.stampsMu.Unlock()
	if x.stamps == nil {
		x.stamps, _ = x.root.Open(stampDir)
	}
	return x.stamps
}

func (x *exporter) writeStamp(image string, s *stamp) error {
	p := stampPath(image)
	if err := x.root.MkdirAll(path.Dir(p), 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := p + ".tmp-" + rand.Text()
	if err := x.root.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := x.root.Rename(tmp, p); err != nil {
		x.root.Remove(tmp)
		return err
	}
	return nil
}

// sortedImages returns the keys of m in order.
func sortedImages[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// exported is what the exports of a build did.
type exported struct {
	outDir    string
	artifacts []Artifact
	whole     []string // images exported whole (exportImage full)
	stale     []string
	pruned    []string // images no longer in the workspace whose exports went
	failed    []*NodeError
}

// exports exports each image of a build as soon as the walk has finished its
// outputs and hooks, beside the nodes still running (-j images at a time): an
// image every output of which was selected is exported whole (exportImage
// full), an image with some outputs selected gets those. An image with a
// failed or skipped output, or a failed post-build hook, is not exported: its
// out directory, if any, is reported stale. Exports that fail are failures of
// their output nodes. Nothing is exported once the build is cancelled.
type exports struct {
	ctx    context.Context
	opts   Options
	p      *plan.Plan
	inWalk map[string]bool
	done   map[string]*task
	wait   map[string]int      // image → its outputs and hooks not finished yet
	images map[string][]string // node ID → the images waiting on it
	jobs   map[string]*exportJob
	stale  []string
	g      errgroup.Group
	slots  chan struct{} // -j exports at a time, without blocking the walk

	once   sync.Once
	x      *exporter
	outDir string
	err    error
}

type exportJob struct {
	items  []exportItem
	full   bool
	states map[string]string
	err    error
}

func newExports(ctx context.Context, opts Options, p *plan.Plan, ids []string) *exports {
	e := &exports{ctx: ctx, opts: opts, p: p, inWalk: map[string]bool{}, done: map[string]*task{},
		wait: map[string]int{}, images: map[string][]string{}, jobs: map[string]*exportJob{}}
	e.slots = make(chan struct{}, max(opts.Jobs, 1))
	for _, id := range ids {
		e.inWalk[id] = true
	}
	for name, img := range p.Images {
		for _, id := range append(slices.Clip(img.Outputs), img.Hooks...) {
			if e.inWalk[id] {
				e.wait[name]++
				e.images[id] = append(e.images[id], name)
			}
		}
	}
	return e
}

// finished is called by the walk (on one goroutine) as each node finishes.
func (e *exports) finished(t *task) {
	e.done[t.n.ID] = t
	for _, image := range e.images[t.n.ID] {
		if e.wait[image]--; e.wait[image] == 0 {
			e.start(image)
		}
	}
}

func (e *exports) start(image string) {
	img := e.p.Images[image]
	var items []exportItem
	full, good := true, true
	for _, id := range img.Outputs {
		t := e.done[id]
		if t == nil {
			full = false
			continue
		}
		if !t.ok {
			good = false
			continue
		}
		items = append(items, exportItem{node: t.n, image: image, name: t.n.Artifact, format: output.Format(t.n.Type), result: t.result})
	}
	for _, id := range img.Hooks {
		if t := e.done[id]; t != nil && t.err != nil {
			good = false
		}
	}
	switch {
	case !good:
		e.stale = append(e.stale, image)
	case len(items) == 0 || e.ctx.Err() != nil:
	default:
		j := &exportJob{items: items, full: full}
		e.jobs[image] = j
		e.g.Go(func() error {
			e.slots <- struct{}{}
			defer func() { <-e.slots }()
			x, err := e.exporter()
			if err == nil {
				j.states, err = x.exportImage(e.ctx, image, j.items, j.full)
			}
			j.err = err
			return nil
		})
	}
}

// exporter opens the out directory once, when the first image needs it.
func (e *exports) exporter() (*exporter, error) {
	e.once.Do(func() {
		root, dir, err := openOutDir(e.opts.Workspace, e.opts.OutDir)
		if err != nil {
			e.err = err
			return
		}
		e.outDir, e.x = dir, &exporter{st: e.opts.Store, root: root, euid: os.Geteuid(), workspace: e.opts.Workspace}
	})
	return e.x, e.err
}

// result waits for the exports started and reports what they did, in image
// order.
func (e *exports) result() exported {
	e.g.Wait()
	for image, n := range e.wait {
		if n > 0 { // a node of it was stopped by a failure elsewhere
			e.stale = append(e.stale, image)
		}
	}
	var ex exported
	if len(e.stale) > 0 && e.ctx.Err() == nil {
		if x, err := e.exporter(); err == nil {
			slices.Sort(e.stale)
			for _, image := range e.stale {
				if _, err := x.root.Lstat(image); err == nil {
					ex.stale = append(ex.stale, image)
				}
			}
		}
	}
	// A build of the whole workspace, with nothing pending, says what out/
	// holds: the exports of images it no longer has go.
	// (Only where this build opened out/ already: pruning alone must not
	// make one.)
	if len(e.opts.Targets) == 0 && len(e.p.Pending) == 0 && e.ctx.Err() == nil && e.x != nil {
		ex.pruned = e.x.prune(e.p.Images)
		slices.Sort(ex.pruned)
	}
	if e.x != nil {
		defer e.x.close()
	}
	ex.outDir = e.outDir
	if e.err != nil {
		ex.failed = append(ex.failed, &NodeError{Node: "export", ExitCode: -1, Err: e.err})
		return ex
	}
	for _, image := range sortedImages(e.jobs) {
		j := e.jobs[image]
		if j.err != nil {
			// The output whose artifact failed, else (the image's directory)
			// the image's first.
			it := j.items[0]
			var ie *itemError
			if errors.As(j.err, &ie) {
				it = ie.it
			}
			err := j.err
			if errors.Is(err, store.ErrCorrupt) {
				err = fmt.Errorf("%w (strata cache verify removes what is corrupt, then build again)", err)
			}
			ex.failed = append(ex.failed, &NodeError{Node: it.node.Name, ID: it.node.ID, Origin: it.node.Origin, ExitCode: -1, Err: err})
			continue
		}
		if j.full {
			ex.whole = append(ex.whole, image)
		}
		for _, it := range j.items {
			d := it.result.Outputs[it.name]
			ex.artifacts = append(ex.artifacts, Artifact{
				Image: image, Name: it.name, Format: it.node.Type, Node: it.node.Name,
				Path:   path.Join(ex.outDir, image, it.name),
				Digest: d.Digest, Size: d.Size, MediaType: it.format.MediaType(),
				State: j.states[it.name],
			})
		}
	}
	return ex
}
