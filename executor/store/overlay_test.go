package store

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// overlayScript changes the merged directory of an overlay mount in every way
// CommitUpper must handle, then snapshots the merged view with cp -a.
const overlayScript = `
set -e
mount -t overlay overlay -o "$OPTS,lowerdir=$L,upperdir=$U,workdir=$W" "$M"
cd "$M"
rm delfile                                # whiteout of a file
rm -r deldir                              # whiteout of a directory
rm -r repl && echo now-a-file > repl      # directory replaced by a file
rm -rf opq && mkdir opq && echo new > opq/new   # opaque directory
chmod 0600 chm                            # metadata-only copy-up
ln -s ../etc/conf newlink                 # new symlink
mkdir sub/newdir && echo f > sub/newdir/f # new directory merged into an old one
echo more >> sub/keep2                    # modified file in a merged directory
mv mvdir mvdir2                           # rename of a directory (copy + whiteout)
rm filedir && mkdir filedir && echo x > filedir/x   # file replaced by a directory
cd /
cp -a "$M/." "$SNAP/"
umount "$M"
`

func runOverlay(t *testing.T, userns bool) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount overlayfs")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not found")
	}
	ctx := context.Background()
	s := newStore(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{
		"delfile":      "gone",
		"deldir/a":     "a",
		"deldir/b/c":   "c",
		"repl/x":       "x",
		"opq/old1":     "old1",
		"opq/sub/old2": "old2",
		"chm":          "mode change",
		"sub/keep1":    "keep1",
		"sub/keep2":    "keep2",
		"mvdir/m":      "moved",
		"filedir":      "was a file",
		"etc/conf":     "conf",
		"untouched/u":  "u",
	})
	base, bd, err := s.CommitDir(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	lower, err := s.Checkout(ctx, bd)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	up, wd, merged, snap := filepath.Join(work, "upper"), filepath.Join(work, "work"), filepath.Join(work, "merged"), filepath.Join(work, "snap")
	for _, d := range []string{up, wd, merged, snap} {
		os.Mkdir(d, 0o755)
	}
	args := []string{"-m", "--propagation", "private"}
	opts := "metacopy=off,redirect_dir=off"
	xattrNS := "trusted."
	if userns {
		args = []string{"-Urm"}
		opts = "userxattr"
		xattrNS = "user."
	}
	cmd := exec.Command("unshare", append(args, "sh", "-c", overlayScript)...)
	cmd.Env = append(os.Environ(), "OPTS="+opts, "L="+lower, "U="+up, "W="+wd, "M="+merged, "SNAP="+snap)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("overlay mount unavailable here: %v\n%s", err, out)
	}
	// The test must exercise the xattr namespace it claims to.
	if _, err := unix.Lgetxattr(filepath.Join(up, "opq"), xattrNS+"overlay.opaque", make([]byte, 8)); err != nil {
		t.Fatalf("upper opq has no %soverlay.opaque: %v", xattrNS, err)
	}

	got, gd, err := s.CommitUpper(ctx, base, up)
	if err != nil {
		t.Fatal(err)
	}
	want, wantD, err := s.CommitDir(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("CommitUpper differs from the merged view (-want +got):\n%s", diff)
	}
	if gd != wantD {
		t.Fatalf("digest %s, want %s", gd, wantD)
	}
	for _, p := range []string{"delfile", "deldir", "deldir/a", "opq/old1", "repl/x", "mvdir"} {
		if _, ok := got.Lookup(p); ok {
			t.Errorf("%s survived", p)
		}
	}
	if e, _ := got.Lookup("chm"); e.Mode != 0o600 {
		t.Errorf("chm mode %o, want 600", e.Mode)
	}
	// The lower checkout and its objects are untouched.
	if rep, err := s.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestCommitUpperOverlay(t *testing.T)          { runOverlay(t, false) }
func TestCommitUpperOverlayUserxattr(t *testing.T) { runOverlay(t, true) }

// An upper directory written by hand: xattr whiteouts (user.* and trusted.*), a 0:0
// character device whiteout and user.overlay.opaque; metacopy is refused.
func TestCommitUpperCrafted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for trusted.* xattrs and mknod")
	}
	ctx := context.Background()
	s := newStore(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"a": "a", "b/x": "x", "c/y": "y", "d/z": "z", "keep": "k"})
	base, _, err := s.CommitDir(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	up := t.TempDir()
	os.WriteFile(filepath.Join(up, "a"), nil, 0o644)
	if err := unix.Lsetxattr(filepath.Join(up, "a"), "user.overlay.whiteout", []byte("y"), 0); err != nil {
		t.Skipf("user xattrs unsupported: %v", err)
	}
	os.WriteFile(filepath.Join(up, "b"), nil, 0o644)
	unix.Lsetxattr(filepath.Join(up, "b"), "trusted.overlay.whiteout", []byte("y"), 0)
	if err := unix.Mknod(filepath.Join(up, "c"), unix.S_IFCHR|0o600, 0); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(up, "d"), 0o750)
	unix.Lsetxattr(filepath.Join(up, "d"), "user.overlay.opaque", []byte("y"), 0)
	os.WriteFile(filepath.Join(up, "d", "new"), []byte("new"), 0o644)
	got, _, err := s.CommitUpper(ctx, base, up)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range got.Entries {
		paths = append(paths, e.Path)
	}
	if diff := cmp.Diff([]string{"d", "d/new", "keep"}, paths); diff != "" {
		t.Fatalf("paths (-want +got):\n%s", diff)
	}
	if e, _ := got.Lookup("d"); e.Mode != 0o750 || e.Type != tree.Dir {
		t.Fatalf("d = %+v", e)
	}

	meta := t.TempDir()
	os.WriteFile(filepath.Join(meta, "m"), nil, 0o644)
	unix.Lsetxattr(filepath.Join(meta, "m"), "trusted.overlay.metacopy", nil, 0)
	if _, _, err := s.CommitUpper(ctx, base, meta); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("CommitUpper with metacopy = %v, want ErrUnsupported", err)
	}
}
