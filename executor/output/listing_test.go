package output

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// trickyNames are names every format must keep: the lost+found family that
// mkfs.erofs 1.5 dropped, white space, shell and format-string characters,
// unicode, a leading dash and a name of NAME_MAX bytes.
var trickyNames = []string{
	" leading space",
	"$dollar*star?[x]{y}(z);&|<>#!~`'",
	"%s%d%n",
	"-dash",
	".hidden",
	"=equals:colon,comma@at+plus",
	"tab\there",
	"trailing space ",
	"with space",
	"ünïcødé-名前-🙂",
	strings.Repeat("n", 254),
}

// trickyTree returns a tree of the entries that break assemblers: the
// lost+found family at the root and deeper, tricky names, empty and locked
// directories, symbolic links (relative, absolute, dangling, long), setuid,
// setgid and sticky bits, mode 0, large owners, device nodes and a fifo.
func trickyTree(t *testing.T, extra ...string) (*tree.Tree, *blobs) {
	t.Helper()
	c := &blobs{dir: t.TempDir(), data: map[digest.Digest][]byte{}}
	file := func(p string, mode uint32, uid, gid int, content string) tree.Entry {
		d := digest.FromString(content)
		c.data[d] = []byte(content)
		return tree.Entry{Path: p, Type: tree.File, Mode: mode, UID: uid, GID: gid, Size: int64(len(content)), Digest: d}
	}
	dir := func(p string, mode uint32, uid, gid int) tree.Entry {
		return tree.Entry{Path: p, Type: tree.Dir, Mode: mode, UID: uid, GID: gid}
	}
	link := func(p, target string) tree.Entry {
		return tree.Entry{Path: p, Type: tree.Symlink, Mode: 0o777, Target: target}
	}
	dev := func(p string, k tree.Kind, mode uint32, gid int, major, minor uint32) tree.Entry {
		return tree.Entry{Path: p, Type: k, Mode: mode, GID: gid, Major: major, Minor: minor}
	}
	// A path of over 600 bytes, in components of 100.
	deep := "deep" + strings.Repeat("/"+strings.Repeat("d", 100), 6)
	es := []tree.Entry{
		file(deep+"/file", 0o644, 0, 0, "deep\n"),
		dir("dev", 0o755, 0, 0),
		dev("dev/console", tree.CharDev, 0o600, 5, 5, 1),
		dev("dev/initctl", tree.Fifo, 0o600, 0, 0, 0),
		dev("dev/nvme0n1p1", tree.BlockDev, 0o660, 6, 259, 300000),
		dev("dev/null", tree.CharDev, 0o666, 0, 1, 3),
		dev("dev/sda1", tree.BlockDev, 0o660, 6, 8, 1),
		dir("empty", 0o755, 0, 0),
		dir("empty/nested", 0o555, 0, 0),
		dir("links", 0o755, 0, 0),
		link("links/abs", "/etc/passwd"),
		link("links/dangling", "nowhere"),
		link("links/long", strings.Repeat("long/", 40)+"target"),
		link("links/rel", "../names/-dash"),
		link("links/space", "../names/with space"),
		dir("lost+found", 0o700, 0, 0),
		file("lost+found/keep", 0o644, 0, 0, "kept\n"),
		file("lost+found.txt", 0o644, 0, 0, "a file next to lost+found\n"),
		dir("modes", 0o755, 0, 0),
		dir("modes/locked", 0o500, 1000, 1000),
		file("modes/locked/inside", 0o400, 1000, 1000, "locked\n"),
		file("modes/none", 0o000, 0, 0, ""),
		file("modes/setgid", 0o2711, 0, 50, "setgid\n"),
		file("modes/setuid", 0o4755, 0, 0, "setuid\n"),
		dir("modes/sticky", 0o1777, 0, 0),
		dir("names", 0o755, 0, 0),
		dir("owners", 0o755, 0, 0),
		file("owners/big-ids", 0o644, 70000, 4000000000, "ids past 16 bits\n"),
		file("owners/nobody", 0o640, 65534, 65534, "nobody\n"),
		dir("var", 0o755, 0, 0),
		dir("var/lost+found", 0o700, 0, 0),
		file("var/lost+found/keep", 0o644, 0, 0, "kept deeper\n"),
		dir("var/lost+found/lost+found", 0o755, 0, 0),
		file("var/lost+foundling", 0o644, 0, 0, "a sibling\n"),
		file("var/z-big", 0o644, 0, 0, strings.Repeat("0123456789abcdef", 20000)),
	}
	for p := deep; p != "."; p = path.Dir(p) {
		es = append(es, dir(p, 0o755, 0, 0))
	}
	for i, n := range append(trickyNames, extra...) {
		es = append(es, file("names/"+n, 0o644, i, i, fmt.Sprintf("file %d\n", i)))
	}
	tr := &tree.Tree{Entries: es}
	tr.Sort()
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	return tr, c
}

// listing returns what a format must reproduce of the manifest, entry by entry.
func listing(tr *tree.Tree) []entryInfo {
	var out []entryInfo
	for _, e := range tr.Entries {
		out = append(out, entryInfo{e.Path, e.Type, e.Mode, e.UID, e.GID, e.Size, e.Digest, e.Target, e.Major, e.Minor})
	}
	return out
}

// readBack lists an artifact with tools strata did not write. Each reader
// returns every entry it finds, so a dropped, added or altered entry shows.
var readBack = map[Format]struct {
	tools []string
	read  func(t *testing.T, res Result) []entryInfo
}{
	FormatTree: {nil, func(t *testing.T, res Result) []entryInfo {
		b, err := os.ReadFile(res.Path)
		if err != nil {
			t.Fatal(err)
		}
		back, err := tree.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		return listing(back)
	}},
	FormatTar: {[]string{"tar"}, func(t *testing.T, res Result) []entryInfo {
		out := extractDir(t)
		run(t, "tar", "--numeric-owner", "--same-permissions", "--same-owner", "-xf", res.Path, "-C", out)
		return scanAll(t, out)
	}},
	FormatTarZstd: {[]string{"tar", "zstd"}, func(t *testing.T, res Result) []entryInfo {
		out := extractDir(t)
		run(t, "tar", "--zstd", "--numeric-owner", "--same-permissions", "--same-owner", "-xf", res.Path, "-C", out)
		return scanAll(t, out)
	}},
	FormatSquashfs: {[]string{"unsquashfs"}, func(t *testing.T, res Result) []entryInfo {
		out := filepath.Join(extractDir(t), "x")
		run(t, "unsquashfs", "-q", "-n", "-d", out, res.Path)
		return scanAll(t, out)
	}},
	FormatExt4: {[]string{"debugfs", "e2fsck"}, func(t *testing.T, res Result) []entryInfo {
		run(t, "e2fsck", "-fn", res.Path)
		return ext4List(t, res.Path, "")
	}},
	FormatErofs: {[]string{"fsck.erofs", "dump.erofs"}, func(t *testing.T, res Result) []entryInfo {
		out := filepath.Join(extractDir(t), "x")
		t.Log(run(t, "fsck.erofs", "--extract="+out, "--preserve", res.Path))
		got := scanAll(t, out)
		// fsck.erofs restores owners after modes, which clears setuid bits:
		// take the permission bits from the image's inodes.
		for i := range got {
			got[i].Mode = erofsMode(t, res.Path, "/"+got[i].Path)
		}
		return got
	}},
	FormatOCI: {nil, func(t *testing.T, res Result) []entryInfo {
		got := ociLayer(t, res.Path)
		if _, err := exec.LookPath("umoci"); err == nil {
			bundle := filepath.Join(extractDir(t), "bundle")
			run(t, "umoci", "--log", "error", "unpack", "--image", res.Path+":"+ociRef(t, res.Path), bundle)
			if diff := cmp.Diff(got, scanAll(t, filepath.Join(bundle, "rootfs"))); diff != "" {
				t.Errorf("umoci unpack differs from the layer (-layer +umoci):\n%s", diff)
			}
		}
		return got
	}},
}

func extractDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// Extracted trees hold 0500 directories and files of other owners.
	t.Cleanup(func() { removeAll(dir) })
	return dir
}

// TestSecurityRow39OutputListing: an output format drops or alters entries →
// every format's listing, read back by a tool strata did not write, equals the
// manifest entry by entry (names, types, modes, owners, sizes, contents, link
// targets, device numbers).
func TestSecurityRow39OutputListing(t *testing.T) {
	needRoot(t, "the readers restore owners, setuid bits and device nodes only as root")
	tr, c := trickyTree(t)
	for _, f := range Formats() {
		t.Run(string(f), func(t *testing.T) {
			t.Parallel()
			rb := readBack[f]
			needTools(t, rb.tools...)
			opts := Options{Format: f, SourceDateEpoch: testEpoch, Platform: Platform{Architecture: "amd64"}, TempDir: t.TempDir()}
			res, err := Write(context.Background(), tr, c, opts, filepath.Join(t.TempDir(), "out"))
			if err != nil {
				t.Fatal(err)
			}
			got := rb.read(t, res)
			if f == FormatExt4 {
				got = dropFSLostFound(tr, got)
			}
			if diff := cmp.Diff(listing(tr), got); diff != "" {
				t.Errorf("%s listing differs from the manifest (-manifest +%s):\n%s", f, f, diff)
			}
		})
	}
}

// TestSecurityRow39HardNames: names some formats cannot hold (a line break, a
// double quote, a backslash, a control character) are either kept exactly or
// refused with ErrUnsupported, never dropped or changed.
func TestSecurityRow39HardNames(t *testing.T) {
	needRoot(t, "the readers restore owners, setuid bits and device nodes only as root")
	for _, name := range []string{strings.Repeat("N", 255), "new\nline", `double"quote`, `back\slash`, "escape\x1b[31m", "carriage\rreturn"} {
		tr, c := trickyTree(t, name)
		for _, f := range Formats() {
			t.Run(fmt.Sprintf("%s/%q", f, name), func(t *testing.T) {
				rb := readBack[f]
				needTools(t, rb.tools...)
				opts := Options{Format: f, SourceDateEpoch: testEpoch, Platform: Platform{Architecture: "amd64"}, TempDir: t.TempDir()}
				res, err := Write(context.Background(), tr, c, opts, filepath.Join(t.TempDir(), "out"))
				if errors.Is(err, ErrUnsupported) {
					t.Logf("refused: %v", err)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				got := rb.read(t, res)
				if f == FormatExt4 {
					got = dropFSLostFound(tr, got)
				}
				if diff := cmp.Diff(listing(tr), got); diff != "" {
					t.Errorf("%s listing differs from the manifest (-manifest +%s):\n%s", f, f, diff)
				}
			})
		}
	}
}

// dropFSLostFound removes the lost+found every ext4 filesystem has, unless the
// manifest has one (then it must be the manifest's).
func dropFSLostFound(tr *tree.Tree, got []entryInfo) []entryInfo {
	if _, ok := tr.Lookup("lost+found"); ok {
		return got
	}
	var out []entryInfo
	for _, e := range got {
		if e.Path != "lost+found" {
			out = append(out, e)
		}
	}
	return out
}

// scanAll lists every entry under root (not root itself) from lstat.
func scanAll(t *testing.T, root string) []entryInfo {
	t.Helper()
	var out []entryInfo
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		e := entryInfo{Path: filepath.ToSlash(rel), Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type = tree.Dir
		case unix.S_IFREG:
			e.Type, e.Size, e.Digest = tree.File, st.Size, fileDigest(t, p)
		case unix.S_IFLNK:
			e.Type = tree.Symlink
			e.Target, _ = os.Readlink(p)
		case unix.S_IFCHR:
			e.Type, e.Major, e.Minor = tree.CharDev, unix.Major(st.Rdev), unix.Minor(st.Rdev)
		case unix.S_IFBLK:
			e.Type, e.Major, e.Minor = tree.BlockDev, unix.Major(st.Rdev), unix.Minor(st.Rdev)
		case unix.S_IFIFO:
			e.Type = tree.Fifo
		default:
			e.Type = tree.Kind(fmt.Sprintf("mode %o", st.Mode))
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// WalkDir visits "a/b" before "a.txt"; the manifest sorts by whole path.
	sortInfos(out)
	return out
}

var (
	debugfsLsP    = regexp.MustCompile(`^/(\d+)/([0-7]+)/(-?\d+)/(-?\d+)/(.*)/(\d*)/$`)
	debugfsDevice = regexp.MustCompile(`Device major/minor number: (\d+):(\d+)`)
	debugfsFast   = regexp.MustCompile(`(?s)Fast link dest: "(.*)"`)
)

// ext4List lists the directory dir of an ext4 image and everything under it
// with debugfs (ls -p, stat, cat), in path order.
func ext4List(t *testing.T, img, dir string) []entryInfo {
	t.Helper()
	var out []entryInfo
	ls := debugfs(t, img, `ls -p "/`+dir+`"`)
	for _, line := range strings.Split(ls, "\n") {
		if line == "" {
			continue
		}
		m := debugfsLsP.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("debugfs ls -p /%s: line %q", dir, line)
		}
		// Inode 0 marks the free slots mke2fs reserves in lost+found.
		if m[5] == "." || m[5] == ".." || m[1] == "0" {
			continue
		}
		mode, _ := strconv.ParseUint(m[2], 8, 32)
		// debugfs prints ids as signed 32-bit numbers.
		uid64, _ := strconv.ParseInt(m[3], 10, 64)
		gid64, _ := strconv.ParseInt(m[4], 10, 64)
		uid, gid := int(uint32(uid64)), int(uint32(gid64))
		p := path.Join(dir, m[5])
		full := `"/` + p + `"`
		e := entryInfo{Path: p, Mode: uint32(mode) & 0o7777, UID: uid, GID: gid}
		ext4Stat(t, img, "/"+p, testEpoch) // checks the times
		switch mode & 0o170000 {
		case 0o040000:
			e.Type = tree.Dir
		case 0o100000:
			e.Type = tree.File
			data := debugfs(t, img, "cat "+full)
			e.Size, e.Digest = int64(len(data)), digest.FromString(data)
		case 0o120000:
			e.Type = tree.Symlink
			if fm := debugfsFast.FindStringSubmatch(debugfs(t, img, "stat "+full)); fm != nil {
				e.Target = fm[1]
				if i := strings.Index(e.Target, "\"\n"); i >= 0 {
					e.Target = e.Target[:i]
				}
			} else {
				e.Target = debugfs(t, img, "cat "+full)
			}
		case 0o020000, 0o060000:
			e.Type = tree.CharDev
			if mode&0o170000 == 0o060000 {
				e.Type = tree.BlockDev
			}
			dm := debugfsDevice.FindStringSubmatch(debugfs(t, img, "stat "+full))
			if dm == nil {
				t.Fatalf("debugfs stat %s: no device numbers", full)
			}
			major, _ := strconv.ParseUint(dm[1], 10, 32)
			minor, _ := strconv.ParseUint(dm[2], 10, 32)
			e.Major, e.Minor = uint32(major), uint32(minor)
		case 0o010000:
			e.Type = tree.Fifo
		default:
			e.Type = tree.Kind(fmt.Sprintf("mode %o", mode))
		}
		out = append(out, e)
		if e.Type == tree.Dir {
			out = append(out, ext4List(t, img, p)...)
		}
	}
	// ls lists in directory order; the manifest is in path order.
	sortInfos(out)
	return out
}

func sortInfos(es []entryInfo) {
	t := &tree.Tree{Entries: make([]tree.Entry, len(es))}
	byPath := map[string]entryInfo{}
	for i, e := range es {
		t.Entries[i].Path = e.Path
		byPath[e.Path] = e
	}
	t.Sort()
	for i, e := range t.Entries {
		es[i] = byPath[e.Path]
	}
}

// debugfs runs one debugfs request and returns its standard output.
func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	cmd := exec.Command("debugfs", "-R", req, img)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", req, err, stderr.String())
	}
	return stdout.String()
}

// ociRef returns the reference name of the single manifest of a layout.
func ociRef(t *testing.T, layout string) string {
	t.Helper()
	var index ocispec.Index
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests", len(index.Manifests))
	}
	return index.Manifests[0].Annotations[ocispec.AnnotationRefName]
}

// ociLayer reads the single layer of a layout with archive/tar.
func ociLayer(t *testing.T, layout string) []entryInfo {
	t.Helper()
	var index ocispec.Index
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	var man ocispec.Manifest
	if err := json.Unmarshal(readBlob(t, layout, index.Manifests[0]), &man); err != nil {
		t.Fatal(err)
	}
	raw := readBlob(t, layout, man.Layers[0])
	var r io.Reader
	if man.Layers[0].MediaType == ocispec.MediaTypeImageLayerZstd {
		zr, err := zstd.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	} else {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	return readTar(t, r, testEpoch)
}

// tarType maps a tar type flag to a tree kind, for readTar.
func tarType(h *tar.Header) (tree.Kind, bool) {
	switch h.Typeflag {
	case tar.TypeDir:
		return tree.Dir, true
	case tar.TypeReg:
		return tree.File, true
	case tar.TypeSymlink:
		return tree.Symlink, true
	case tar.TypeChar:
		return tree.CharDev, true
	case tar.TypeBlock:
		return tree.BlockDev, true
	case tar.TypeFifo:
		return tree.Fifo, true
	}
	return "", false
}
