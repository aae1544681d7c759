package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

func TestBlobRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	for _, content := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte("x"), 3<<20)} {
		d, n, err := s.PutBlob(ctx, bytes.NewReader(content))
		if err != nil {
			t.Fatal(err)
		}
		if d != digest.FromBytes(content) || n != int64(len(content)) {
			t.Fatalf("PutBlob = %s %d, want %s %d", d, n, digest.FromBytes(content), len(content))
		}
		if !s.HasBlob(d) {
			t.Fatalf("HasBlob(%s) = false", d)
		}
		got, err := s.ReadBlob(ctx, d)
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("ReadBlob: %d bytes, %v", len(got), err)
		}
		// A second put of the same content keeps the same single object.
		if d2, err := s.PutBytes(ctx, content); err != nil || d2 != d {
			t.Fatalf("second put: %s %v", d2, err)
		}
		p, _ := s.BlobPath(d)
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o444 {
			t.Fatalf("blob file %s: %v %v, want mode 0444", p, st, err)
		}
	}
	missing := digest.FromString("missing")
	if s.HasBlob(missing) {
		t.Fatal("HasBlob of a missing blob")
	}
	if _, err := s.OpenBlob(missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenBlob(missing) = %v, want ErrNotFound", err)
	}
	if left, _ := os.ReadDir(s.session); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

func TestLinkFileMetadataAndDedup(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("content"), 0o600)
	d, n, err := s.LinkFile(ctx, p, 0o4755, 12, 34)
	if err != nil {
		t.Fatal(err)
	}
	if d != digest.FromString("content") || n != 7 {
		t.Fatalf("LinkFile = %s %d", d, n)
	}
	obj, _ := s.FilePath(d, 0o4755, 12, 34)
	var st, fst unix.Stat_t
	if err := unix.Stat(obj, &st); err != nil {
		t.Fatal(err)
	}
	unix.Stat(p, &fst)
	if st.Mode&0o7777 != 0o4755 || st.Uid != 12 || st.Gid != 34 {
		t.Fatalf("object mode %o uid %d gid %d, want 4755 12 34", st.Mode&0o7777, st.Uid, st.Gid)
	}
	if st.Ino != fst.Ino {
		t.Fatal("LinkFile copied instead of linking")
	}
	bp, _ := s.BlobPath(d)
	var bst unix.Stat_t
	unix.Stat(bp, &bst)
	if bst.Ino != st.Ino {
		t.Fatal("blob path is not a hardlink of the file object")
	}
	// Same content and metadata again: the new file is left alone.
	p2 := filepath.Join(dir, "g")
	os.WriteFile(p2, []byte("content"), 0o600)
	if _, _, err := s.LinkFile(ctx, p2, 0o4755, 12, 34); err != nil {
		t.Fatal(err)
	}
	unix.Stat(p2, &fst)
	if fst.Mode&0o7777 != 0o600 {
		t.Fatalf("deduplicated file was changed: mode %o", fst.Mode&0o7777)
	}
	// A file with another hardlink is copied, so the other name cannot alter the object.
	p3, p4 := filepath.Join(dir, "h"), filepath.Join(dir, "h2")
	os.WriteFile(p3, []byte("linked twice"), 0o644)
	os.Link(p3, p4)
	d3, _, err := s.LinkFile(ctx, p3, 0o644, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	obj3, _ := s.FilePath(d3, 0o644, 0, 0)
	unix.Stat(obj3, &st)
	unix.Stat(p3, &fst)
	if st.Ino == fst.Ino {
		t.Fatal("a file with two names was linked into the store")
	}
	if _, _, err := s.LinkFile(ctx, dir, 0o755, 0, 0); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("LinkFile(dir) = %v, want ErrUnsupported", err)
	}
}

func TestCommitDirCheckoutReuse(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{
		"bin/":        "",
		"bin/tool":    "#!/bin/sh\n",
		"etc/conf":    "a=1\n",
		"etc/link":    "->conf",
		"etc/empty":   "",
		"etc/dup":     "a=1\n",
		"var/lib/db/": "",
	})
	os.Chmod(filepath.Join(src, "bin/tool"), 0o755)
	unix.Chmod(filepath.Join(src, "var/lib"), 0o1777)
	os.Lchown(filepath.Join(src, "etc/conf"), 100, 200)
	tr, d, err := s.CommitDir(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	if want, _ := tr.Digest(); want != d {
		t.Fatalf("CommitDir digest %s, tree digest %s", d, want)
	}
	if diff := cmp.Diff(tr, mustTree(t, s, d)); diff != "" {
		t.Fatalf("GetTree differs (-put +got):\n%s", diff)
	}
	want := map[string]tree.Entry{
		"bin/tool": {Path: "bin/tool", Type: tree.File, Mode: 0o755, Size: 10, Digest: digest.FromString("#!/bin/sh\n")},
		"etc/conf": {Path: "etc/conf", Type: tree.File, Mode: 0o644, UID: 100, GID: 200, Size: 4, Digest: digest.FromString("a=1\n")},
		"etc/link": {Path: "etc/link", Type: tree.Symlink, Mode: 0o777, Target: "conf"},
		"var/lib":  {Path: "var/lib", Type: tree.Dir, Mode: 0o1777},
	}
	for p, w := range want {
		got, ok := tr.Lookup(p)
		if diff := cmp.Diff(w, got); !ok || diff != "" {
			t.Errorf("entry %s (-want +got):\n%s", p, diff)
		}
	}

	co, err := s.Checkout(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	// Reused, not built again: with its manifest set aside a checkout cannot be
	// built, but the one already made is still returned.
	mp, _ := s.BlobPath(d)
	aside := mp + ".aside"
	if err := os.Rename(mp, aside); err != nil {
		t.Fatal(err)
	}
	co2, err := s.Checkout(ctx, d)
	if err != nil || co2 != co {
		t.Fatalf("second checkout %q, %v; want %q", co2, err, co)
	}
	if err := os.Rename(aside, mp); err != nil {
		t.Fatal(err)
	}
	for _, e := range tr.Entries {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(co, e.Path), &st); err != nil {
			t.Fatal(err)
		}
		if e.Type != tree.Symlink && st.Mode&0o7777 != e.Mode {
			t.Errorf("%s: mode %o, want %o", e.Path, st.Mode&0o7777, e.Mode)
		}
		if int(st.Uid) != e.UID || int(st.Gid) != e.GID {
			t.Errorf("%s: owner %d:%d, want %d:%d", e.Path, st.Uid, st.Gid, e.UID, e.GID)
		}
		if e.Type == tree.File {
			obj, _ := s.FilePath(e.Digest, e.Mode, e.UID, e.GID)
			var ost unix.Stat_t
			unix.Stat(obj, &ost)
			if ost.Ino != st.Ino {
				t.Errorf("%s: checkout file is not a hardlink of its object", e.Path)
			}
		}
	}
	// A checkout recorded again gives the same tree (round trip).
	cp := t.TempDir()
	if out, err := exec_("cp", "-a", co+"/.", cp); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	_, d2, err := s.CommitDir(ctx, cp)
	if err != nil || d2 != d {
		t.Fatalf("recommit: %s %v, want %s", d2, err, d)
	}

	// Checkout of a tree whose file objects are gone rebuilds them from blobs.
	s2 := newStore(t)
	data, _ := s.ReadBlob(ctx, d)
	for _, e := range tr.Entries {
		if e.Type == tree.File {
			b, _ := s.ReadBlob(ctx, e.Digest)
			s2.PutBytes(ctx, b)
		}
	}
	d3, _ := s2.PutBytes(ctx, data)
	co3, err := s2.Checkout(ctx, d3)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(co3, "etc/conf")); err != nil || string(b) != "a=1\n" {
		t.Fatalf("checkout from blobs: %q %v", b, err)
	}
}

// TestCommitDirSpecialFiles: fifos and device nodes are tree entries (as root
// a stage makes them for real); sockets are refused, naming the path.
func TestCommitDirSpecialFiles(t *testing.T) {
	s := newStore(t)
	src := t.TempDir()
	fifo := filepath.Join(src, "sub", "pipe")
	os.Mkdir(filepath.Dir(fifo), 0o755)
	if err := unix.Mkfifo(fifo, 0o640); err != nil {
		t.Fatal(err)
	}
	tr, _, err := s.CommitDir(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := tr.Lookup("sub/pipe"); !ok || e.Type != tree.Fifo || e.Mode != 0o640 {
		t.Fatalf("fifo entry %+v", e)
	}
	sock := filepath.Join(src, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, _, err = s.CommitDir(context.Background(), src)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), sock) {
		t.Fatalf("CommitDir with a socket = %v, want ErrUnsupported naming %s", err, sock)
	}
}

func TestActionCache(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"f": "file"})
	_, td, err := s.CommitDir(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	logd, _ := s.PutBytes(ctx, []byte("log"))
	outd, _ := s.PutBytes(ctx, []byte("image"))
	a := &Action{Key: "sha256:abcd", WeakKey: "weak1", Tree: td, Log: logd,
		Outputs: map[string]digest.Digest{"img": outd}, Meta: json.RawMessage(`{"exit":0}`)}

	if _, err := s.GetAction(ctx, a.Key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetAction before put = %v, want ErrNotFound", err)
	}
	bad := *a
	bad.Log = digest.FromString("never stored")
	if err := s.PutAction(ctx, &bad); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PutAction with a missing blob = %v, want ErrNotFound", err)
	}
	if err := s.PutAction(ctx, &Action{Key: "../escape"}); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("PutAction with a bad key = %v, want ErrInvalidKey", err)
	}
	if err := s.PutAction(ctx, a); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetAction(ctx, a.Key)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got, cmpopts.IgnoreUnexported(Action{})); diff != "" {
		t.Fatalf("GetAction (-want +got):\n%s", diff)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].Key != a.Key || list[0].Size == 0 {
		t.Fatalf("List = %+v, %v", list, err)
	}

	if err := s.PutWeak(ctx, "weak1", json.RawMessage(`{"inputs":["a"]}`)); err != nil {
		t.Fatal(err)
	}
	w, err := s.GetWeak(ctx, "weak1")
	if err != nil || string(w) != `{"inputs":["a"]}` {
		t.Fatalf("GetWeak = %s, %v", w, err)
	}
	if _, err := s.GetWeak(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetWeak(missing) = %v", err)
	}

	// The output blob goes missing: the entry is a miss and is removed.
	op, _ := s.BlobPath(outd)
	os.Remove(op)
	if _, err := s.GetAction(ctx, a.Key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetAction with a missing output = %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(s.actionPath(a.Key)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("broken entry was not removed")
	}
}

// Row 2: a torn write (a truncated temp file of a dead writer) and an action entry
// whose blob never made it.
func TestTornWrite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	td, _ := s.PutTree(ctx, &tree.Tree{Entries: []tree.Entry{{Path: "f", Type: tree.File, Mode: 0o644, Size: 4, Digest: digest.FromString("lost")}}})
	s.Close()
	// A dead writer's session with half a blob, and a stray file.
	dead := filepath.Join(dir, dirTmp, sessionPrefix+"dead")
	os.Mkdir(dead, 0o700)
	os.WriteFile(filepath.Join(dead, "b-123"), []byte("half a bl"), 0o644)
	os.WriteFile(filepath.Join(dir, dirTmp, "stray"), nil, 0o644)
	// An entry written before its log blob (the wrong order, as after a lost rename).
	entry, _ := json.Marshal(&Action{Key: "k", Tree: td, Log: digest.FromString("never renamed")})
	os.WriteFile(filepath.Join(dir, dirActions, "k.json"), entry, 0o644)
	// And one torn in half.
	os.WriteFile(filepath.Join(dir, dirActions, "torn.json"), entry[:len(entry)/2], 0o644)

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A store makes its session on its first write, not at Open.
	left, _ := os.ReadDir(filepath.Join(dir, dirTmp))
	if len(left) != 0 {
		t.Fatalf("tmp/ after Open holds %v, want nothing", left)
	}
	for _, k := range []string{"k", "torn"} {
		if _, err := s.GetAction(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetAction(%s) = %v, want a miss", k, err)
		}
	}
	rep, err := s.Verify(ctx)
	if err != nil || !rep.OK() {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// Rows 3 and 4: bit flip, truncation and zero length.
func TestCorruption(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(p string)
	}{
		{"bitflip", func(p string) {
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0x01
			os.WriteFile(p, b, 0o444)
		}},
		{"truncate", func(p string) { os.Truncate(p, 1000) }},
		{"zero", func(p string) { os.Truncate(p, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t)
			src := t.TempDir()
			content := strings.Repeat("payload ", 4096)
			writeFiles(t, src, map[string]string{"data": content, "other": "fine"})
			tr, td, err := s.CommitDir(ctx, src)
			if err != nil {
				t.Fatal(err)
			}
			logd, _ := s.PutBytes(ctx, []byte("log"))
			if err := s.PutAction(ctx, &Action{Key: "victim", Tree: td, Log: logd}); err != nil {
				t.Fatal(err)
			}
			other, _ := s.PutBytes(ctx, []byte("unrelated"))
			if err := s.PutAction(ctx, &Action{Key: "bystander", Log: other}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Checkout(ctx, td); err != nil {
				t.Fatal(err)
			}
			e, _ := tr.Lookup("data")
			p, _ := s.BlobPath(e.Digest)
			os.Chmod(p, 0o644)
			tc.damage(p)

			r, err := s.OpenBlob(e.Digest)
			if err == nil {
				_, err = io.Copy(io.Discard, r)
				r.Close()
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("reading the damaged blob = %v, want ErrCorrupt", err)
			}
			if _, err := s.OpenBlobSize(e.Digest, e.Size); tc.name != "bitflip" && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("OpenBlobSize = %v, want ErrCorrupt before reading", err)
			}

			rep, err := s.Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Quarantined) == 0 || !contains(rep.Corrupt, filepath.Join(dirBlobs, e.Digest.Encoded()[:2], e.Digest.Encoded())) {
				t.Fatalf("Verify did not quarantine the blob: %+v", rep)
			}
			if diff := cmp.Diff([]string{"victim"}, rep.DroppedActions); diff != "" {
				t.Fatalf("dropped actions (-want +got):\n%s", diff)
			}
			if len(rep.RemovedCheckouts) != 1 || rep.RemovedCheckouts[0] != td {
				t.Fatalf("removed checkouts %v, want [%s]", rep.RemovedCheckouts, td)
			}
			if s.HasBlob(e.Digest) {
				t.Fatal("the bad blob is still served")
			}
			if _, err := s.GetAction(ctx, "victim"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("GetAction(victim) = %v, want a miss", err)
			}
			if _, err := s.GetAction(ctx, "bystander"); err != nil {
				t.Fatalf("GetAction(bystander) = %v", err)
			}
			q, _ := os.ReadDir(filepath.Join(s.Dir(), dirQuarantine))
			if len(q) == 0 {
				t.Fatal("quarantine/ is empty")
			}
			// A rebuild stores the content again and everything verifies.
			writeFiles(t, src, map[string]string{"data2": content})
			if _, _, err := s.LinkFile(ctx, filepath.Join(src, "data2"), 0o644, 0, 0); err != nil {
				t.Fatal(err)
			}
			if rep, err := s.Verify(ctx); err != nil || !rep.OK() {
				t.Fatalf("second Verify = %+v, %v", rep, err)
			}
			checkAllBlobs(t, s)
		})
	}
}

// Verify also catches a file object whose mode was changed behind the store's back.
func TestVerifyFileMetadata(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("x"), 0o644)
	d, _, err := s.LinkFile(ctx, p, 0o644, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := s.FilePath(d, 0o644, 0, 0)
	os.Chmod(obj, 0o666)
	rep, err := s.Verify(ctx)
	if err != nil || len(rep.Quarantined) != 1 {
		t.Fatalf("Verify = %+v, %v; want the object quarantined", rep, err)
	}
	if _, err := os.Stat(obj); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("object with wrong mode still in place")
	}
}

func TestGCLRU(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	base := time.Now().Add(-time.Hour)
	for i := 0; i < 4; i++ {
		src := t.TempDir()
		writeFiles(t, src, map[string]string{"f": strings.Repeat(string(rune('a'+i)), 256<<10)})
		_, td, err := s.CommitDir(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Checkout(ctx, td); err != nil {
			t.Fatal(err)
		}
		logd, _ := s.PutBytes(ctx, bytes.Repeat([]byte{byte(i)}, 64<<10))
		key := "a" + string(rune('0'+i))
		if err := s.PutAction(ctx, &Action{Key: key, Tree: td, Log: logd}); err != nil {
			t.Fatal(err)
		}
		tm := base.Add(time.Duration(i) * time.Minute)
		os.Chtimes(s.actionPath(key), tm, tm)
	}
	garbage, _ := s.PutBytes(ctx, []byte("unreferenced"))

	st, err := s.GC(ctx, -1)
	if err != nil || st.ActionsRemoved != 0 || st.BlobsRemoved != 1 || s.HasBlob(garbage) {
		t.Fatalf("GC(-1) = %+v, %v; want only the garbage blob removed", st, err)
	}
	keys := func() []string {
		l, _ := s.List(ctx)
		var ks []string
		for _, a := range l {
			ks = append(ks, a.Key)
		}
		return ks
	}
	size, _ := s.Size(ctx)
	st, err = s.GC(ctx, size-1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a3", "a2", "a1"}, keys()); diff != "" {
		t.Fatalf("after GC (-want +got):\n%s", diff)
	}
	if st.ActionsRemoved != 1 || st.CheckoutsRemoved != 1 || st.BytesAfter > size-1 || st.BytesAfter >= st.BytesBefore {
		t.Fatalf("GC stats %+v (max %d)", st, size-1)
	}
	// Using a1 makes a2 the least recently used.
	if _, err := s.GetAction(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	size, _ = s.Size(ctx)
	if _, err := s.GC(ctx, size-1); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a1", "a3"}, keys()); diff != "" {
		t.Fatalf("after second GC (-want +got):\n%s", diff)
	}
	for _, k := range []string{"a1", "a3"} {
		a, err := s.GetAction(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Checkout(ctx, a.Tree); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := s.Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("Verify after GC = %+v, %v", rep, err)
	}
	if _, err := s.GC(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if n := checkAllBlobs(t, s); n != 0 {
		t.Fatalf("GC(0) left %d blobs", n)
	}
}

func TestLockKeyCancel(t *testing.T) {
	s := newStore(t)
	release, err := s.LockKey(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.LockKey(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LockKey on a held key = %v, want DeadlineExceeded", err)
	}
	release()
	r2, err := s.LockKey(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	r2()
	if _, err := s.LockKey(ctx, "a/b"); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("LockKey(a/b) = %v", err)
	}
}

// TestDiscard: a discarded working directory goes in the background, even one
// a stage left without write permission, and Close waits for it, so nothing of
// the session is left behind.
func TestDiscard(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for range 5 {
		d, err := s.MkdirTemp("stage-")
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]string{"upper/etc/": "", "upper/etc/motd": "hi", "upper/bin/sh": "->busybox"}
		for i := range 50 {
			files[fmt.Sprintf("upper/usr/share/f%d", i)] = "x"
		}
		writeFiles(t, d, files)
		if err := os.Chmod(filepath.Join(d, "upper", "usr", "share"), 0o555); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	session := filepath.Dir(dirs[0])
	for _, d := range dirs {
		s.Discard(d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range append(dirs, session) {
		if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is still there after Close (%v)", d, err)
		}
	}
}
