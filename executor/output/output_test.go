package output

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

const testEpoch = 1700000000

// blobs is an in-memory Contents whose Path writes each blob once to a directory.
type blobs struct {
	dir  string
	data map[digest.Digest][]byte
}

var _ Contents = (*blobs)(nil)

func (b *blobs) OpenBlob(d digest.Digest) (io.ReadCloser, error) {
	data, ok := b.data[d]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, fs.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (b *blobs) BlobPath(d digest.Digest) (string, error) {
	data, ok := b.data[d]
	if !ok {
		return "", fmt.Errorf("blob %s: %w", d, fs.ErrNotExist)
	}
	p := filepath.Join(b.dir, d.Encoded())
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	// Parallel writers share the blobs: publish each file whole.
	tmp, err := os.CreateTemp(b.dir, ".tmp-*")
	if err != nil {
		return "", err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o444)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return p, nil
}

// testTree returns a small tree with the cases that break naive assemblers:
// private directories, setuid, setgid and sticky bits, non-root and large owners,
// symlinks, an empty file, a path with a space, a long name, and one content used
// twice with different modes and owners.
func testTree(t *testing.T) (*tree.Tree, *blobs) {
	t.Helper()
	c := &blobs{dir: t.TempDir(), data: map[digest.Digest][]byte{}}
	big := bytes.Repeat([]byte("strata reproducible output\n"), 20000)
	file := func(p string, mode uint32, uid, gid int, content string) tree.Entry {
		d := digest.FromString(content)
		c.data[d] = []byte(content)
		return tree.Entry{Path: p, Type: tree.File, Mode: mode, UID: uid, GID: gid, Size: int64(len(content)), Digest: d}
	}
	dir := func(p string, mode uint32, uid, gid int) tree.Entry {
		return tree.Entry{Path: p, Type: tree.Dir, Mode: mode, UID: uid, GID: gid}
	}
	tr := &tree.Tree{Entries: []tree.Entry{
		dir("bin", 0o755, 0, 0),
		file("bin/sh", 0o755, 0, 0, "#!/bin/sh\necho hello\n"),
		file("bin/su", 0o4755, 0, 0, "setuid binary\n"),
		{Path: "bin/sh2", Type: tree.Symlink, Mode: 0o777, Target: "sh"},
		dir("etc", 0o755, 0, 0),
		file("etc/hostname", 0o644, 0, 0, "strata\n"),
		file("etc/hostname.copy", 0o600, 1000, 1000, "strata\n"),
		file("empty", 0o644, 0, 0, ""),
		dir("home", 0o755, 0, 0),
		dir("home/user", 0o700, 1000, 1000),
		file("home/user/a note", 0o640, 1000, 1000, "with a space\n"),
		dir("home/user/deep", 0o750, 1000, 1000),
		dir("home/user/deep/er", 0o755, 1000, 1000),
		file("home/user/deep/er/big", 0o644, 1000, 1000, string(big)),
		// A name past USTAR's 100 bytes and ids past its 7 octal digits need PAX records.
		file("home/user/deep/er/"+strings.Repeat("long-name-", 12), 0o2755, 3000000, 3000001, "pax\n"),
		dir("root", 0o700, 0, 0),
		{Path: "sh", Type: tree.Symlink, Mode: 0o777, Target: "bin/sh"},
		dir("tmp", 0o1777, 0, 0),
	}}
	tr.Sort()
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	return tr, c
}

// entryInfo is what the tests compare between a manifest and an artifact.
type entryInfo struct {
	Path   string
	Type   tree.Kind
	Mode   uint32
	UID    int
	GID    int
	Size   int64
	Digest digest.Digest
	Target string
	Major  uint32
	Minor  uint32
}

func want(tr *tree.Tree) []entryInfo { return listing(tr) }

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: %v", tool, err)
		}
	}
}

func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("not root: %s", why)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func fileDigest(t *testing.T, p string) digest.Digest {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := digest.FromReader(f)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// dirDigests maps every file under dir to its digest.
func dirDigests(t *testing.T, dir string) map[string]digest.Digest {
	t.Helper()
	m := map[string]digest.Digest{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		m[rel] = fileDigest(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// scanDir reads an extracted tree back. With checkMeta, it also checks that every
// entry's mtime is the epoch and the root is 0755 owned by 0:0.
func scanDir(t *testing.T, root string, epoch int64, checkMeta bool) []entryInfo {
	t.Helper()
	var out []entryInfo
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if checkMeta && fi.ModTime().Unix() != epoch {
			t.Errorf("%s: mtime %v, want %d", p, fi.ModTime(), epoch)
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			if checkMeta && (st.Mode&0o7777 != 0o755 || st.Uid != 0 || st.Gid != 0) {
				t.Errorf("root: mode %o owner %d:%d, want 755 0:0", st.Mode&0o7777, st.Uid, st.Gid)
			}
			return nil
		}
		if rel == "lost+found" {
			return filepath.SkipDir
		}
		e := entryInfo{Path: filepath.ToSlash(rel), Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid)}
		switch {
		case fi.IsDir():
			e.Type = tree.Dir
		case fi.Mode().IsRegular():
			e.Type = tree.File
			e.Size = fi.Size()
			e.Digest = fileDigest(t, p)
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Type = tree.Symlink
			e.Target, _ = os.Readlink(p)
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readTar reads a tar stream back, checking the reproducibility-relevant header fields.
func readTar(t *testing.T, r io.Reader, epoch int64) []entryInfo {
	t.Helper()
	tr := tar.NewReader(r)
	var out []entryInfo
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.ModTime.Unix() != epoch || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: times %v %v %v, want mtime %d only", h.Name, h.ModTime, h.AccessTime, h.ChangeTime, epoch)
		}
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner names %q %q, want none", h.Name, h.Uname, h.Gname)
		}
		e := entryInfo{Path: strings.TrimSuffix(h.Name, "/"), Mode: uint32(h.Mode), UID: h.Uid, GID: h.Gid}
		k, ok := tarType(h)
		if !ok {
			t.Errorf("%s: type %c", h.Name, h.Typeflag)
		}
		e.Type = k
		switch k {
		case tree.File:
			e.Size = h.Size
			d, err := digest.FromReader(tr)
			if err != nil {
				t.Fatal(err)
			}
			e.Digest = d
		case tree.Symlink:
			e.Target = h.Linkname
		case tree.CharDev, tree.BlockDev:
			e.Major, e.Minor = uint32(h.Devmajor), uint32(h.Devminor)
		}
		out = append(out, e)
	}
	return out
}

func writeTwice(t *testing.T, tr *tree.Tree, c Contents, opts Options, name string) (Result, Result) {
	t.Helper()
	ctx := context.Background()
	var res [2]Result
	for i := range res {
		dst := filepath.Join(t.TempDir(), name)
		r, err := Write(ctx, tr, c, opts, dst)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if r.Path != dst || r.MediaType != opts.Format.MediaType() {
			t.Fatalf("result %+v, want path %s and media type %s", r, dst, opts.Format.MediaType())
		}
		res[i] = r
		if i == 0 {
			// Give the source files other times than they had: an artifact that
			// took a time from its sources instead of the epoch would change.
			restamp(t, c, opts.Checkout)
		}
	}
	if res[0].Digest != res[1].Digest || res[0].Size != res[1].Size {
		t.Errorf("not reproducible: %s (%d bytes) then %s (%d bytes)", res[0].Digest, res[0].Size, res[1].Digest, res[1].Size)
	}
	if opts.Format != FormatOCI && opts.Format != FormatTree {
		if got := fileDigest(t, res[0].Path); got != res[0].Digest {
			t.Errorf("result digest %s, file digest %s", res[0].Digest, got)
		}
	}
	t.Logf("%s: %s", opts.Format, res[0].Digest)
	assertNoTemps(t, filepath.Dir(res[0].Path))
	return res[0], res[1]
}

// restamp sets the access and modification times of every blob file and of
// everything in checkout (when set) to a time other than the epoch and the
// present, and different from the previous call's.
func restamp(t *testing.T, c Contents, checkout string) {
	t.Helper()
	when := time.Unix(testEpoch-1000*restamps.Add(1), 0)
	var dirs []string
	if b, ok := c.(*blobs); ok {
		dirs = append(dirs, b.dir)
	}
	if checkout != "" {
		dirs = append(dirs, checkout)
	}
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Type()&fs.ModeSymlink != 0 {
				return err
			}
			return os.Chtimes(p, when, when)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

var restamps atomic.Int64

// assertNoTemps fails if dir holds anything but the artifact.
func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover %s in %s", e.Name(), dir)
		}
	}
}

func TestTree(t *testing.T) {
	tr, c := testTree(t)
	res, _ := writeTwice(t, tr, c, Options{Format: FormatTree}, "tree.json")
	td, _ := tr.Digest()
	if res.Digest != td || fileDigest(t, res.Path) != td {
		t.Errorf("digest %s, want tree digest %s", res.Digest, td)
	}
}

func TestTar(t *testing.T) {
	tr, c := testTree(t)
	res, _ := writeTwice(t, tr, c, Options{Format: FormatTar, SourceDateEpoch: testEpoch}, "out.tar")
	f, err := os.Open(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if diff := cmp.Diff(want(tr), readTar(t, f, testEpoch)); diff != "" {
		t.Errorf("tar entries (-want +got):\n%s", diff)
	}
	if _, err := exec.LookPath("tar"); err == nil {
		// GNU tar must list it too (a format sanity check).
		run(t, "tar", "-tvf", res.Path)
	}
}

func TestTarZstd(t *testing.T) {
	tr, c := testTree(t)
	res, _ := writeTwice(t, tr, c, Options{Format: FormatTarZstd, SourceDateEpoch: testEpoch}, "out.tar.zst")
	f, err := os.Open(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if diff := cmp.Diff(want(tr), readTar(t, zr, testEpoch)); diff != "" {
		t.Errorf("tar entries (-want +got):\n%s", diff)
	}
	if _, err := exec.LookPath("zstd"); err == nil {
		run(t, "zstd", "-q", "-t", res.Path)
	}
}

func TestSquashfs(t *testing.T) {
	needTools(t, "mksquashfs", "unsquashfs")
	tr, c := testTree(t)
	res, _ := writeTwice(t, tr, c, Options{Format: FormatSquashfs, SourceDateEpoch: testEpoch}, "out.squashfs")
	list := run(t, "unsquashfs", "-lln", res.Path)
	for _, line := range []string{"-rwsr-xr-x 0/0", "drwx------ 1000/1000", "-rw------- 1000/1000", "drwxrwxrwt 0/0"} {
		if !strings.Contains(list, line) {
			t.Errorf("unsquashfs -lln lacks %q:\n%s", line, list)
		}
	}
	needRoot(t, "unsquashfs only restores owners as root")
	out := filepath.Join(t.TempDir(), "x")
	run(t, "unsquashfs", "-q", "-n", "-d", out, res.Path)
	if diff := cmp.Diff(want(tr), scanDir(t, out, testEpoch, true)); diff != "" {
		t.Errorf("squashfs entries (-want +got):\n%s", diff)
	}
}

func TestExt4(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs")
	tr, c := testTree(t)
	res, _ := writeTwice(t, tr, c, Options{Format: FormatExt4, SourceDateEpoch: testEpoch, Label: "strata"}, "out.ext4")
	if _, err := exec.LookPath("e2fsck"); err == nil {
		run(t, "e2fsck", "-fn", res.Path)
	}
	stat := run(t, "debugfs", "-R", "stat /home/user", res.Path)
	if !strings.Contains(stat, "Mode:  0700") || !strings.Contains(stat, "User:  1000   Group:  1000") {
		t.Errorf("debugfs stat /home/user:\n%s", stat)
	}
	// rdump gives paths and contents; debugfs stat gives modes, owners and times
	// (rdump drops setuid and sticky bits).
	out := t.TempDir()
	run(t, "debugfs", "-R", "rdump / "+out, res.Path)
	got := scanDir(t, out, testEpoch, false)
	for i := range got {
		got[i].Mode, got[i].UID, got[i].GID = ext4Stat(t, res.Path, "/"+got[i].Path, testEpoch)
	}
	if diff := cmp.Diff(want(tr), got); diff != "" {
		t.Errorf("ext4 entries (-want +got):\n%s", diff)
	}
	if mode, uid, gid := ext4Stat(t, res.Path, "/", testEpoch); mode != 0o755 || uid != 0 || gid != 0 {
		t.Errorf("root: mode %o owner %d:%d, want 755 0:0", mode, uid, gid)
	}
}

var (
	debugfsMode  = regexp.MustCompile(`Mode:\s+(\d+)`)
	debugfsOwner = regexp.MustCompile(`User:\s+(-?\d+)\s+Group:\s+(-?\d+)`)
	debugfsTime  = regexp.MustCompile(`(?m)^\s*(a|m|c|cr)time: (0x[0-9a-f]+)`)
)

// ext4Stat returns the permission bits and owner of p in an ext4 image, checking
// that all four of its times are the epoch.
func ext4Stat(t *testing.T, img, p string, epoch int64) (uint32, int, int) {
	t.Helper()
	out := run(t, "debugfs", "-R", `stat "`+p+`"`, img)
	m := debugfsMode.FindStringSubmatch(out)
	o := debugfsOwner.FindStringSubmatch(out)
	times := debugfsTime.FindAllStringSubmatch(out, -1)
	if m == nil || o == nil || len(times) != 4 {
		t.Fatalf("debugfs stat %s:\n%s", p, out)
	}
	for _, tm := range times {
		if v, _ := strconv.ParseInt(tm[2], 0, 64); v != epoch {
			t.Errorf("%s: %stime %s, want %d", p, tm[1], tm[2], epoch)
		}
	}
	mode, _ := strconv.ParseUint(m[1], 8, 32)
	// debugfs prints ids as signed 32-bit numbers.
	uid, _ := strconv.ParseInt(o[1], 10, 64)
	gid, _ := strconv.ParseInt(o[2], 10, 64)
	return uint32(mode), int(uint32(uid)), int(uint32(gid))
}

func TestErofs(t *testing.T) {
	needTools(t, "mkfs.erofs", "fsck.erofs")
	needRoot(t, "a tree with non-root owners needs root to stage for mkfs.erofs")
	tr, c := testTree(t)
	res, _ := writeTwice(t, tr, c, Options{Format: FormatErofs, SourceDateEpoch: testEpoch}, "out.erofs")
	out := filepath.Join(t.TempDir(), "x")
	run(t, "fsck.erofs", "--extract="+out, "--preserve", res.Path)
	// fsck.erofs restores owners after modes, which clears setuid bits: take the
	// permission bits from the image's inodes.
	got := scanDir(t, out, testEpoch, true)
	for i := range got {
		got[i].Mode = erofsMode(t, res.Path, "/"+got[i].Path)
	}
	if diff := cmp.Diff(want(tr), got); diff != "" {
		t.Errorf("erofs entries (-want +got):\n%s", diff)
	}
	if _, err := exec.LookPath("dump.erofs"); err == nil {
		created := time.Unix(testEpoch, 0).Format(time.ANSIC)
		if sb := run(t, "dump.erofs", "-s", res.Path); !strings.Contains(sb, "created:") || !strings.Contains(sb, created) {
			t.Errorf("superblock creation time is not the epoch:\n%s", sb)
		}
	}
}

var (
	erofsMetaBlock = regexp.MustCompile(`inode metadata start block:\s+(\d+)`)
	erofsNID       = regexp.MustCompile(`NID:\s+(\d+)`)
)

// erofsMode reads the permission bits of p from its on-disk inode: i_mode is at
// offset 4 of both inode layouts, and inode nid sits at meta_blkaddr*4096 + nid*32.
func erofsMode(t *testing.T, img, p string) uint32 {
	t.Helper()
	needTools(t, "dump.erofs")
	sb := erofsMetaBlock.FindStringSubmatch(run(t, "dump.erofs", "-s", img))
	nid := erofsNID.FindStringSubmatch(run(t, "dump.erofs", "--path="+p, img))
	if sb == nil || nid == nil {
		t.Fatalf("dump.erofs: no metadata block or NID for %s", p)
	}
	blk, _ := strconv.ParseInt(sb[1], 10, 64)
	n, _ := strconv.ParseInt(nid[1], 10, 64)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [2]byte
	if _, err := f.ReadAt(b[:], blk*4096+n*32+4); err != nil {
		t.Fatal(err)
	}
	return uint32(binary.LittleEndian.Uint16(b[:])) & 0o7777
}

// TestEpochZero checks the default epoch, which e2fsprogs cannot fake directly.
func TestEpochZero(t *testing.T) {
	for _, tc := range []struct {
		format Format
		tools  []string
	}{
		{FormatTarZstd, nil},
		{FormatSquashfs, []string{"mksquashfs"}},
		{FormatExt4, []string{"mkfs.ext4", "debugfs"}},
		{FormatErofs, []string{"mkfs.erofs"}},
		{FormatOCI, nil},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			t.Parallel()
			needTools(t, tc.tools...)
			tr, c := testTree(t)
			if tc.format == FormatErofs && os.Geteuid() != 0 {
				t.Skip("not root: erofs with non-root owners")
			}
			writeTwice(t, tr, c, Options{Format: tc.format, Platform: Platform{Architecture: "amd64"}}, "out")
		})
	}
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

// readBlob returns a verified blob of an OCI layout.
func readBlob(t *testing.T, layout string, d ocispec.Descriptor) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", d.Digest.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(b) != d.Digest || int64(len(b)) != d.Size {
		t.Fatalf("blob %s: digest %s size %d, descriptor size %d", d.Digest, digest.FromBytes(b), len(b), d.Size)
	}
	return b
}

func TestOCI(t *testing.T) {
	tr, c := testTree(t)
	for _, comp := range []string{"gzip", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			opts := Options{
				Format: FormatOCI, SourceDateEpoch: testEpoch, Name: "v1", Compression: comp,
				Platform: Platform{Architecture: "arm64", Variant: "v8"}, Cmd: []string{"/bin/sh"},
			}
			res, res2 := writeTwice(t, tr, c, opts, "image")
			if diff := cmp.Diff(dirDigests(t, res.Path), dirDigests(t, res2.Path)); diff != "" {
				t.Errorf("layouts differ (-first +second):\n%s", diff)
			}
			checkLayout(t, tr, res, opts)
		})
	}
}

func checkLayout(t *testing.T, tr *tree.Tree, res Result, opts Options) {
	var layout ocispec.ImageLayout
	readJSON(t, filepath.Join(res.Path, "oci-layout"), &layout)
	if layout.Version != "1.0.0" {
		t.Errorf("oci-layout version %q", layout.Version)
	}
	var index ocispec.Index
	readJSON(t, filepath.Join(res.Path, "index.json"), &index)
	if index.SchemaVersion != 2 || index.MediaType != ocispec.MediaTypeImageIndex || len(index.Manifests) != 1 {
		t.Fatalf("index %+v", index)
	}
	md := index.Manifests[0]
	if md.Digest != res.Digest || md.Size != res.Size || md.MediaType != ocispec.MediaTypeImageManifest ||
		md.Annotations[ocispec.AnnotationRefName] != opts.Name {
		t.Errorf("index manifest descriptor %+v, result %+v", md, res)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(readBlob(t, res.Path, md), &man); err != nil {
		t.Fatal(err)
	}
	if man.SchemaVersion != 2 || man.MediaType != ocispec.MediaTypeImageManifest ||
		man.Config.MediaType != ocispec.MediaTypeImageConfig || len(man.Layers) != 1 {
		t.Fatalf("manifest %+v", man)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(readBlob(t, res.Path, man.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Created == nil || !cfg.Created.Equal(time.Unix(testEpoch, 0)) || cfg.OS != "linux" ||
		cfg.Architecture != "arm64" || cfg.Variant != "v8" || cfg.RootFS.Type != "layers" ||
		len(cfg.RootFS.DiffIDs) != 1 || !cmp.Equal(cfg.Config.Cmd, opts.Cmd) || len(cfg.Config.Env) != 1 {
		t.Errorf("config %+v", cfg)
	}
	layer := readBlob(t, res.Path, man.Layers[0])
	var r io.Reader
	switch man.Layers[0].MediaType {
	case ocispec.MediaTypeImageLayerGzip:
		zr, err := gzip.NewReader(bytes.NewReader(layer))
		if err != nil {
			t.Fatal(err)
		}
		if zr.Name != "" || !zr.ModTime.IsZero() {
			t.Errorf("gzip header %+v, want no name and no time", zr.Header)
		}
		r = zr
	case ocispec.MediaTypeImageLayerZstd:
		zr, err := zstd.NewReader(bytes.NewReader(layer))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("layer media type %s", man.Layers[0].MediaType)
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if d := digest.FromBytes(raw); d != cfg.RootFS.DiffIDs[0] {
		t.Errorf("diff_id %s, uncompressed layer %s", cfg.RootFS.DiffIDs[0], d)
	}
	if diff := cmp.Diff(want(tr), readTar(t, bytes.NewReader(raw), testEpoch)); diff != "" {
		t.Errorf("layer entries (-want +got):\n%s", diff)
	}
}

// hardlinkFarm checks the tree out the way a store does: every file a hardlink
// of its blob, so equal contents are one inode, with the checkout's own metadata.
func hardlinkFarm(t *testing.T, tr *tree.Tree, c *blobs) string {
	t.Helper()
	root := t.TempDir()
	for _, e := range tr.Entries {
		p := filepath.Join(root, filepath.FromSlash(e.Path))
		var err error
		switch e.Type {
		case tree.Dir:
			err = os.Mkdir(p, 0o755)
		case tree.Symlink:
			err = os.Symlink(e.Target, p)
		case tree.File:
			var src string
			if src, err = c.BlobPath(e.Digest); err == nil {
				err = os.Link(src, p)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestCheckout writes each filesystem format from a hardlink-farm checkout and from
// the contents alone, and expects the same bytes: metadata comes from the manifest
// and shared inodes in the checkout never become hardlinks in the image. The blobs
// the checkout links to must be left untouched.
func TestCheckout(t *testing.T) {
	for _, tc := range []struct {
		format Format
		tools  []string
		root   bool
	}{
		{FormatSquashfs, []string{"mksquashfs"}, false},
		{FormatExt4, []string{"mkfs.ext4", "debugfs"}, false},
		{FormatErofs, []string{"mkfs.erofs"}, true},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			t.Parallel()
			needTools(t, tc.tools...)
			if tc.root {
				needRoot(t, "staging non-root owners")
			}
			tr, c := testTree(t)
			farm := hardlinkFarm(t, tr, c)
			before := blobMeta(t, c.dir)
			opts := Options{Format: tc.format, SourceDateEpoch: testEpoch}
			r1, err := Write(context.Background(), tr, c, opts, filepath.Join(t.TempDir(), "plain"))
			if err != nil {
				t.Fatal(err)
			}
			opts.Checkout = farm
			r2, err := Write(context.Background(), tr, c, opts, filepath.Join(t.TempDir(), "farm"))
			if err != nil {
				t.Fatal(err)
			}
			if r1.Digest != r2.Digest {
				t.Errorf("from contents %s, from checkout %s", r1.Digest, r2.Digest)
			}
			if diff := cmp.Diff(before, blobMeta(t, c.dir)); diff != "" {
				t.Errorf("blob metadata changed (-before +after):\n%s", diff)
			}
		})
	}
}

// blobMeta lists mode, owner and mtime of every blob file.
func blobMeta(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		fi, err := os.Lstat(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		out = append(out, fmt.Sprintf("%s %o %d:%d %d", e.Name(), st.Mode, st.Uid, st.Gid, fi.ModTime().UnixNano()))
	}
	sort.Strings(out)
	return out
}

func TestCheckoutMismatch(t *testing.T) {
	needTools(t, "mksquashfs")
	tr, c := testTree(t)
	farm := hardlinkFarm(t, tr, c)
	if err := os.WriteFile(filepath.Join(farm, "stray"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err := Write(context.Background(), tr, c, Options{Format: FormatSquashfs, Checkout: farm}, filepath.Join(dir, "out"))
	if !errors.Is(err, ErrCheckout) {
		t.Fatalf("err %v, want ErrCheckout", err)
	}
	assertEmpty(t, dir)
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("%s holds %v after a failed write", dir, names)
	}
}

// failingContents serves every blob but one.
type failingContents struct {
	*blobs
	bad digest.Digest
}

func (f failingContents) OpenBlob(d digest.Digest) (io.ReadCloser, error) {
	if d == f.bad {
		return nil, errors.New("disk on fire")
	}
	return f.blobs.OpenBlob(d)
}

func (f failingContents) BlobPath(d digest.Digest) (string, error) {
	if d == f.bad {
		return "", errors.New("disk on fire")
	}
	return f.blobs.BlobPath(d)
}

// TestFailureLeavesNothing checks that failed or cancelled writes leave no file
// at dst and no temporary file beside it.
func TestFailureLeavesNothing(t *testing.T) {
	tr, c := testTree(t)
	big, _ := tr.Lookup("home/user/deep/er/big")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	// A tool cancelled while it runs, whatever the machine's speed: a mksquashfs
	// that says it started and then waits is cancelled once it has said so.
	midRun := cancelWhenToolStarts(t, "mksquashfs")
	wrongSize := &tree.Tree{Entries: append([]tree.Entry(nil), tr.Entries...)}
	for i := range wrongSize.Entries {
		if wrongSize.Entries[i].Path == "bin/sh" {
			wrongSize.Entries[i].Size++
		}
	}
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		tr    *tree.Tree
		c     Contents
		opts  Options
		tools []string
		is    error
	}{
		{"tar-missing-blob", context.Background(), tr, failingContents{c, big.Digest}, Options{Format: FormatTar}, nil, nil},
		{"tar-wrong-size", context.Background(), wrongSize, c, Options{Format: FormatTar}, nil, ErrContent},
		{"tar.zst-cancelled", cancelled, tr, c, Options{Format: FormatTarZstd}, nil, context.Canceled},
		{"oci-missing-blob", context.Background(), tr, failingContents{c, big.Digest}, Options{Format: FormatOCI, Platform: Platform{Architecture: "amd64"}}, nil, nil},
		{"squashfs-bad-compressor", context.Background(), tr, c, Options{Format: FormatSquashfs, Compression: "bogus"}, nil, ErrInvalidOptions},
		{"squashfs-cancelled", cancelled, tr, c, Options{Format: FormatSquashfs}, []string{"mksquashfs"}, context.Canceled},
		{"squashfs-cancelled-mid-run", midRun, tr, c, Options{Format: FormatSquashfs}, nil, context.Canceled},
		{"ext4-too-small", context.Background(), tr, c, Options{Format: FormatExt4, Size: 64 << 10}, []string{"mkfs.ext4"}, nil},
		{"erofs-missing-blob", context.Background(), tr, failingContents{c, big.Digest}, Options{Format: FormatErofs}, []string{"mkfs.erofs"}, nil},
		{"unknown-format", context.Background(), tr, c, Options{Format: "zip"}, nil, ErrUnknownFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			needTools(t, tc.tools...)
			dir, work := t.TempDir(), t.TempDir()
			tc.opts.TempDir = work
			_, err := Write(tc.ctx, tc.tr, tc.c, tc.opts, filepath.Join(dir, "out"))
			if err == nil {
				t.Fatal("write succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err %v, want %v", err, tc.is)
			}
			t.Log(err)
			assertEmpty(t, dir)
			assertEmpty(t, work)
		})
	}
}

// cancelWhenToolStarts puts a stand-in for tool first on PATH that announces its
// start on a fifo and then blocks, and returns a context cancelled as soon as the
// stand-in has started. The stand-in ignores its arguments: it only has to be
// running when the context is cancelled.
func cancelWhenToolStarts(t *testing.T, tool string) context.Context {
	t.Helper()
	bin := t.TempDir()
	started := filepath.Join(bin, "started")
	if err := syscall.Mkfifo(started, 0o600); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\necho started > '%s'\nexec sleep 1000\n", started)
	if err := os.WriteFile(filepath.Join(bin, tool), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		defer cancel()
		f, err := os.Open(started) // blocks until the stand-in opens it
		if err != nil {
			return
		}
		io.Copy(io.Discard, f)
		f.Close()
	}()
	return ctx
}

// largeTree returns a tree with one file of n pseudo-random (poorly compressible) bytes.
func largeTree(t *testing.T, n int) (*tree.Tree, *blobs) {
	data := make([]byte, n)
	x := uint64(88172645463325252)
	for i := 0; i+8 <= n; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(data[i:], x)
	}
	d := digest.FromBytes(data)
	c := &blobs{dir: t.TempDir(), data: map[digest.Digest][]byte{d: data}}
	return &tree.Tree{Entries: []tree.Entry{{Path: "random", Type: tree.File, Mode: 0o644, Size: int64(n), Digest: d}}}, c
}

// TestToolErrorHasStderr checks that a failing tool's message reaches the caller.
func TestToolErrorHasStderr(t *testing.T) {
	needTools(t, "mkfs.ext4")
	tr, c := testTree(t)
	_, err := Write(context.Background(), tr, c, Options{Format: FormatExt4, Size: 64 << 10}, filepath.Join(t.TempDir(), "out"))
	var te *ToolError
	if !errors.As(err, &te) || te.Tool != "mkfs.ext4" || te.Stderr == "" {
		t.Fatalf("err %v, want a *ToolError from mkfs.ext4 with stderr", err)
	}
}

func TestReplaceExisting(t *testing.T) {
	tr, c := testTree(t)
	dir := t.TempDir()
	for _, opts := range []Options{{Format: FormatTar}, {Format: FormatOCI, Platform: Platform{Architecture: "amd64"}}} {
		dst := filepath.Join(dir, string(opts.Format))
		for i := 0; i < 2; i++ {
			if _, err := Write(context.Background(), tr, c, opts, dst); err != nil {
				t.Fatalf("%s write %d: %v", opts.Format, i, err)
			}
		}
	}
	assertNoTemps(t, dir)
}

// TestExt4AutoSize checks the computed size for a tree of many small files and
// one large one.
func TestExt4AutoSize(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs", "e2fsck")
	tr, c := largeTree(t, 24<<20)
	tr.Entries = append(tr.Entries, tree.Entry{Path: "many", Type: tree.Dir, Mode: 0o755})
	for i := 0; i < 1500; i++ {
		content := fmt.Sprintf("file %d\n", i)
		d := digest.FromString(content)
		c.data[d] = []byte(content)
		tr.Entries = append(tr.Entries, tree.Entry{Path: fmt.Sprintf("many/a-rather-long-file-name-%05d", i), Type: tree.File, Mode: 0o644, Size: int64(len(content)), Digest: d})
	}
	tr.Sort()
	res, err := Write(context.Background(), tr, c, Options{Format: FormatExt4}, filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	run(t, "e2fsck", "-fn", res.Path)
	if res.Size > 64<<20 {
		t.Errorf("image is %d bytes for about 25 MiB of data", res.Size)
	}
}

func TestDerivedUUID(t *testing.T) {
	tr, _ := testTree(t)
	u, err := derivedUUID(tr, Options{Format: FormatExt4}, "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(u) != 36 || u[14] != '8' || !strings.ContainsRune("89ab", rune(u[19])) {
		t.Errorf("uuid %s is not a version 8 RFC 9562 UUID", u)
	}
}

// TestErofsAllRoot writes a tree owned by 0:0, which works without root too
// (through --all-root) and must give the same image either way.
func TestErofsAllRoot(t *testing.T) {
	needTools(t, "mkfs.erofs")
	tr, c := testTree(t)
	for i := range tr.Entries {
		tr.Entries[i].UID, tr.Entries[i].GID = 0, 0
	}
	writeTwice(t, tr, c, Options{Format: FormatErofs, SourceDateEpoch: testEpoch}, "out.erofs")
}

// TestSecurityRow38Ext4Size: an ext4 size far beyond the tree must neither fill
// the disk nor pass unchecked. A size past MaxExt4Size or past the free space
// is refused before anything is written; an allowed large size gives a sparse
// image that takes about the space of its tree, with the same bytes.
func TestSecurityRow38Ext4Size(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs", "e2fsck")
	tr, c := largeTree(t, 3)
	t.Run("over the cap", func(t *testing.T) {
		dir := t.TempDir()
		_, err := Write(context.Background(), tr, c, Options{Format: FormatExt4, Size: MaxExt4Size + 4096}, filepath.Join(dir, "img"))
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "256.0 GiB") {
			t.Fatalf("err %v, want ErrTooLarge naming the limit", err)
		}
		assertEmpty(t, dir)
	})
	t.Run("over the free space", func(t *testing.T) {
		dir := t.TempDir()
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		size := (int64(st.Bavail)*st.Bsize/4096 + 1) * 4096
		if size > MaxExt4Size {
			t.Skipf("%d bytes free: the cap comes first", size)
		}
		_, err := Write(context.Background(), tr, c, Options{Format: FormatExt4, Size: size}, filepath.Join(dir, "img"))
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "free on the filesystem of") {
			t.Fatalf("err %v, want ErrTooLarge naming the free space", err)
		}
		assertEmpty(t, dir)
	})
	t.Run("sparse", func(t *testing.T) {
		const size = 512 << 20
		res, err := Write(context.Background(), tr, c, Options{Format: FormatExt4, Size: size}, filepath.Join(t.TempDir(), "img"))
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(res.Path, &st); err != nil {
			t.Fatal(err)
		}
		// mkfs.ext4 zeroes a 16 MiB journal for this size; only the
		// filesystem's metadata may stay allocated.
		if st.Size != size || st.Blocks*512 > 4<<20 {
			t.Errorf("image is %d bytes with %d allocated, want %d with under 4 MiB", st.Size, st.Blocks*512, size)
		}
		if fileDigest(t, res.Path) != res.Digest {
			t.Error("digging holes changed the image's bytes")
		}
		run(t, "e2fsck", "-fn", res.Path)
	})
}
