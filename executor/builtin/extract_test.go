package builtin

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
)

type tarEntry struct {
	hdr  tar.Header
	body string
}

func file(name, body string, mode int64) tarEntry {
	return tarEntry{tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body}
}

func dir(name string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}

func link(typ byte, name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: typ, Name: name, Linkname: target, Mode: 0o777}}
}

func mkTar(t *testing.T, ents ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if h.Format == tar.FormatUnknown {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zst(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// extractInto writes archive to a file input and extracts it into tree.
func extractInto(t *testing.T, tree string, archive []byte, opts map[string]any, env Env) error {
	t.Helper()
	in := filepath.Join(t.TempDir(), "archive")
	if err := os.WriteFile(in, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	if opts == nil {
		opts = map[string]any{}
	}
	opts["input"] = "a"
	env.Tree = tree
	env.Inputs = map[string]string{"a": in}
	return runStage(t, "strata.extract", opts, env)
}

func TestExtractFormats(t *testing.T) {
	plain := mkTar(t,
		dir("./", 0o755),
		dir("./etc/", 0o755),
		file("./etc/os-release", "ID=test\n", 0o644),
		file("usr/bin/passwd", "pw", 0o4755),
		file("usr/bin/wall", "w", 0o2755),
		dir("tmp", 0o1777),
		link(tar.TypeSymlink, "bin", "usr/bin"),
		link(tar.TypeSymlink, "etc/mtab", "/proc/self/mounts"),
		link(tar.TypeLink, "usr/bin/chfn", "usr/bin/passwd"),
		tarEntry{tar.Header{Typeflag: tar.TypeReg, Name: "home/u/f", Mode: 0o600, Uid: 1000, Gid: 1000, Size: 1}, "x"},
	)
	want := map[string]string{
		"/bin":            "link usr/bin",
		"/etc":            "dir 0755 0:0",
		"/etc/mtab":       "link /proc/self/mounts",
		"/etc/os-release": `file 0644 0:0 "ID=test\n"`,
		"/home":           "dir 0755 0:0",
		"/home/u":         "dir 0755 0:0",
		"/home/u/f":       `file 0600 1000:1000 "x"`,
		"/tmp":            "dir 1777 0:0",
		"/usr":            "dir 0755 0:0",
		"/usr/bin":        "dir 0755 0:0",
		"/usr/bin/chfn":   `file 4755 0:0 "pw"`,
		"/usr/bin/passwd": `file 4755 0:0 "pw"`,
		"/usr/bin/wall":   `file 2755 0:0 "w"`,
	}
	tests := []struct {
		name, format string
		data         []byte
	}{
		{"tar auto", "auto", plain},
		{"tar", "tar", plain},
		{"gz auto", "", gz(t, plain)},
		{"gz", "tar.gz", gz(t, plain)},
		{"zst auto", "auto", zst(t, plain)},
		{"zst", "tar.zst", zst(t, plain)},
	}
	var first map[string]string
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tree := t.TempDir()
			opts := map[string]any{}
			if tc.format != "" {
				opts["format"] = tc.format
			}
			if err := extractInto(t, tree, tc.data, opts, Env{}); err != nil {
				t.Fatal(err)
			}
			got := snapshot(t, tree)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("tree (-want +got):\n%s", diff)
			}
			fi1, _ := os.Stat(filepath.Join(tree, "usr/bin/passwd"))
			fi2, _ := os.Stat(filepath.Join(tree, "usr/bin/chfn"))
			if !os.SameFile(fi1, fi2) {
				t.Errorf("hard link not preserved")
			}
			if first == nil {
				first = got
			} else if diff := cmp.Diff(first, got); diff != "" {
				t.Errorf("not deterministic:\n%s", diff)
			}
		})
	}
	t.Run("wrong explicit format", func(t *testing.T) {
		err := extractInto(t, t.TempDir(), plain, map[string]any{"format": "tar.gz"}, Env{})
		wantErr(t, err, "gzip")
	})
}

func TestExtractOptions(t *testing.T) {
	archive := mkTar(t, file("pkg-1.0/bin/tool", "t", 0o755), file("pkg-1.0/README", "r", 0o644), file("top", "x", 0o644),
		link(tar.TypeLink, "pkg-1.0/bin/tool2", "pkg-1.0/bin/tool"))
	indir := t.TempDir()
	writeFile(t, filepath.Join(indir, "sub/a.tar"), string(archive), 0o644)
	tree := t.TempDir()
	env := Env{Tree: tree, Inputs: map[string]string{"d": indir}}
	opts := map[string]any{"input": "d", "path": "/sub/a.tar", "dst": "/opt/pkg", "strip_components": 1}
	if err := runStage(t, "strata.extract", opts, env); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/opt":               "dir 0755 0:0",
		"/opt/pkg":           "dir 0755 0:0",
		"/opt/pkg/README":    `file 0644 0:0 "r"`,
		"/opt/pkg/bin":       "dir 0755 0:0",
		"/opt/pkg/bin/tool":  `file 0755 0:0 "t"`,
		"/opt/pkg/bin/tool2": `file 0755 0:0 "t"`,
	}
	if diff := cmp.Diff(want, snapshot(t, tree)); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
	bad := []struct {
		name string
		opts map[string]any
		err  string
	}{
		{"dir input without path", map[string]any{"input": "d"}, `path: input "d" is a directory`},
		{"path escapes", map[string]any{"input": "d", "path": "../x"}, `path: path "/../x" contains ".."`},
		{"missing path", map[string]any{"input": "d", "path": "nope.tar"}, `no such file`},
		{"format", map[string]any{"input": "d", "path": "sub/a.tar", "format": "zip"}, `format: "zip" is not one of`},
		{"strip", map[string]any{"input": "d", "path": "sub/a.tar", "strip_components": -1}, `strip_components: -1`},
		{"unknown", map[string]any{"input": "d", "strip": 1}, `unknown field "strip"`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, runStage(t, "strata.extract", tc.opts, env), tc.err)
		})
	}
}

// TestExtractAttacks extracts malicious archives next to a sentinel
// directory that must not change (RELIABILITY row 22).
func TestExtractAttacks(t *testing.T) {
	const hostEvil = "/etc/strata-extract-test-evil"
	type check func(t *testing.T, tree, outside string)
	exists := func(p, want string) check {
		return func(t *testing.T, tree, outside string) {
			p := strings.ReplaceAll(p, "OUTSIDE", rel(outside))
			got := snapshot(t, tree)[p]
			if got != want {
				t.Errorf("%s: got %q, want %q", p, got, want)
			}
		}
	}
	tests := []struct {
		name  string
		ents  func(outside string) []tarEntry
		plant func(t *testing.T, tree, outside string)
		err   error
		msg   string
		check check
	}{
		{name: "dotdot", ents: func(string) []tarEntry { return []tarEntry{file("../outside/sentinel", "pwned", 0o644)} },
			err: ErrUnsafeEntry, msg: `contains ".."`},
		{name: "dotdot in middle", ents: func(string) []tarEntry { return []tarEntry{file("a/../../outside/evil", "pwned", 0o644)} },
			err: ErrUnsafeEntry},
		{name: "absolute is made relative", ents: func(o string) []tarEntry { return []tarEntry{file(o+"/sentinel", "pwned", 0o644)} },
			check: exists("/OUTSIDE/sentinel", `file 0644 0:0 "pwned"`)},
		{name: "symlink to root then write through", ents: func(o string) []tarEntry {
			return []tarEntry{link(tar.TypeSymlink, "link", "/"), file("link"+hostEvil, "pwned", 0o644), file("link/"+rel(o)+"/sentinel", "pwned", 0o644)}
		}, check: func(t *testing.T, tree, outside string) {
			exists(hostEvil, `file 0644 0:0 "pwned"`)(t, tree, outside)
			exists("/OUTSIDE/sentinel", `file 0644 0:0 "pwned"`)(t, tree, outside)
			if _, err := os.Lstat(hostEvil); err == nil {
				t.Errorf("%s written on the host", hostEvil)
			}
		}},
		{name: "symlink to parent then write through", ents: func(string) []tarEntry {
			return []tarEntry{link(tar.TypeSymlink, "up", ".."), file("up/outside/sentinel", "pwned", 0o644)}
		}, check: exists("/outside/sentinel", `file 0644 0:0 "pwned"`)},
		{name: "symlink chain out", ents: func(o string) []tarEntry {
			return []tarEntry{link(tar.TypeSymlink, "a", "b/../../.."), dir("b", 0o755), link(tar.TypeSymlink, "c", "a/"+rel(o)), file("c/sentinel", "pwned", 0o644)}
		}, check: exists("/OUTSIDE/sentinel", `file 0644 0:0 "pwned"`)},
		{name: "symlink to host dir then write through", ents: func(o string) []tarEntry {
			return []tarEntry{link(tar.TypeSymlink, "link", o), file("link/sentinel", "pwned", 0o644)}
		}, check: exists("/OUTSIDE/sentinel", `file 0644 0:0 "pwned"`)},
		{name: "symlink then overwrite the link itself", ents: func(o string) []tarEntry {
			return []tarEntry{link(tar.TypeSymlink, "s", o+"/sentinel"), file("s", "pwned", 0o644)}
		}, check: exists("/s", `file 0644 0:0 "pwned"`)},
		{name: "planted tree symlink", plant: func(t *testing.T, tree, o string) { symlink(t, o, filepath.Join(tree, "etc")) },
			ents:  func(string) []tarEntry { return []tarEntry{file("etc/sentinel", "pwned", 0o644)} },
			check: exists("/OUTSIDE/sentinel", `file 0644 0:0 "pwned"`)},
		{name: "dot symlink", ents: func(o string) []tarEntry {
			return []tarEntry{link(tar.TypeSymlink, ".", o), file("sentinel", "pwned", 0o644)}
		}, err: ErrUnsafeEntry, msg: "cannot replace the extraction directory"},
		{name: "dot slash symlink", ents: func(o string) []tarEntry {
			return []tarEntry{link(tar.TypeSymlink, "./", o), file("sentinel", "pwned", 0o644)}
		}, err: ErrUnsafeEntry},
		{name: "dot file", ents: func(string) []tarEntry { return []tarEntry{file(".", "x", 0o644)} }, err: ErrUnsafeEntry},
		{name: "hardlink to host passwd", ents: func(string) []tarEntry { return []tarEntry{link(tar.TypeLink, "pw", "/etc/passwd")} },
			err: ErrUnsafeEntry, msg: `hard link target "/etc/passwd"`},
		{name: "hardlink to outside", ents: func(string) []tarEntry { return []tarEntry{link(tar.TypeLink, "h", "../outside/sentinel")} },
			err: ErrUnsafeEntry},
		{name: "hardlink to absolute outside", ents: func(o string) []tarEntry { return []tarEntry{link(tar.TypeLink, "h", o+"/sentinel")} },
			err: ErrUnsafeEntry},
		{name: "hardlink through symlink", ents: func(o string) []tarEntry {
			return []tarEntry{link(tar.TypeSymlink, "l", o), link(tar.TypeLink, "h", "l/sentinel")}
		}, err: ErrUnsafeEntry},
		{name: "hardlink to directory", ents: func(string) []tarEntry { return []tarEntry{dir("d", 0o755), link(tar.TypeLink, "h", "d")} },
			err: ErrUnsafeEntry},
		{name: "hardlink to planted outside link", plant: func(t *testing.T, tree, o string) {
			if err := os.Link(filepath.Join(o, "sentinel"), filepath.Join(tree, "planted")); err != nil {
				t.Fatal(err)
			}
		}, ents: func(string) []tarEntry { return []tarEntry{file("planted", "pwned", 0o644)} },
			check: exists("/planted", `file 0644 0:0 "pwned"`)},
		{name: "hardlink then overwrite", ents: func(string) []tarEntry {
			return []tarEntry{file("a", "A", 0o644), link(tar.TypeLink, "b", "a"), file("b", "B", 0o644)}
		}, check: func(t *testing.T, tree, outside string) {
			exists("/a", `file 0644 0:0 "A"`)(t, tree, outside)
			exists("/b", `file 0644 0:0 "B"`)(t, tree, outside)
		}},
		{name: "char device", ents: func(string) []tarEntry {
			return []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Devmajor: 1, Devminor: 3, Mode: 0o666}}}
		}, err: ErrUnsafeEntry, msg: "character device entries are not allowed"},
		{name: "block device", ents: func(string) []tarEntry {
			return []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Devmajor: 8, Mode: 0o660}}}
		}, err: ErrUnsafeEntry},
		{name: "fifo", ents: func(string) []tarEntry {
			return []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "p", Mode: 0o644}}}
		},
			err: ErrUnsafeEntry},
		{name: "setuid kept", ents: func(string) []tarEntry { return []tarEntry{file("su", "x", 0o6755)} },
			check: exists("/su", `file 6755 0:0 "x"`)},
		{name: "duplicates last wins", ents: func(string) []tarEntry {
			return []tarEntry{file("f", "1", 0o600), file("f", "2", 0o644), link(tar.TypeSymlink, "g", "x"), file("g", "3", 0o644),
				file("h", "4", 0o644), link(tar.TypeSymlink, "h", "y"), dir("d", 0o700), dir("d", 0o755)}
		}, check: func(t *testing.T, tree, outside string) {
			exists("/f", `file 0644 0:0 "2"`)(t, tree, outside)
			exists("/g", `file 0644 0:0 "3"`)(t, tree, outside)
			exists("/h", `link y`)(t, tree, outside)
			exists("/d", `dir 0755 0:0`)(t, tree, outside)
		}},
		{name: "directory entry keeps a directory symlink", plant: func(t *testing.T, tree, o string) {
			symlink(t, "usr/bin", filepath.Join(tree, "bin"))
			symlink(t, o+"/sentinel", filepath.Join(tree, "f"))
			if err := os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, ents: func(string) []tarEntry {
			return []tarEntry{dir("bin/", 0o700), file("bin/x", "x", 0o755), dir("f/", 0o700)}
		}, check: func(t *testing.T, tree, outside string) {
			exists("/bin", "link usr/bin")(t, tree, outside)
			exists("/usr/bin", "dir 0755 0:0")(t, tree, outside)
			exists("/usr/bin/x", `file 0755 0:0 "x"`)(t, tree, outside)
			exists("/f", "dir 0700 0:0")(t, tree, outside)
		}},
		{name: "non-empty dir replaced by symlink", ents: func(o string) []tarEntry {
			return []tarEntry{file("d/f", "x", 0o644), link(tar.TypeSymlink, "d", o), file("d/sentinel", "pwned", 0o644)}
		}, err: nil, msg: "cannot replace directory"},
		{name: "long name", ents: func(string) []tarEntry { return []tarEntry{file(strings.Repeat("a/", 2100)+"f", "x", 0o644)} },
			err: ErrLimit, msg: "name longer than 4096 bytes"},
		{name: "long component", ents: func(string) []tarEntry { return []tarEntry{file(strings.Repeat("a", 300), "x", 0o644)} },
			err: ErrLimit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tree, outside, checkOutside := sandboxDirs(t)
			if tc.plant != nil {
				tc.plant(t, tree, outside)
			}
			err := extractInto(t, tree, mkTar(t, tc.ents(outside)...), nil, Env{})
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Errorf("error %v, want %v", err, tc.err)
				}
				if tc.msg != "" {
					wantErr(t, err, tc.msg)
				}
			case tc.msg != "":
				wantErr(t, err, tc.msg)
			case err != nil:
				t.Errorf("unexpected error: %v", err)
			}
			if tc.check != nil {
				tc.check(t, tree, outside)
			}
			checkOutside()
		})
	}
}

// paxBomb returns an archive whose first entry is a 2 MiB PAX extended
// header (archive/tar's writer refuses to produce one, so it is patched in).
func paxBomb(t *testing.T) []byte {
	t.Helper()
	value := strings.Repeat("x", 2<<20)
	rec := "comment=" + value + "\n"
	n := len(rec) + 8
	rec = fmt.Sprintf("%d %s", n, rec)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "PaxHeaders/f", Size: int64(len(rec)), Mode: 0o644, Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(tw, rec)
	tw.Flush()
	b := buf.Bytes()
	b[156] = tar.TypeXHeader
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return append(bytes.Clone(b), mkTar(t, file("f", "x", 0o644))...)
}

func TestExtractPAXBomb(t *testing.T) {
	tree, _, check := sandboxDirs(t)
	err := extractInto(t, tree, paxBomb(t), nil, Env{})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("error %v, want ErrLimit", err)
	}
	wantErr(t, err, "header field too long")
	check()
}

// TestExtractLimits checks the caps of RELIABILITY row 23.
func TestExtractLimits(t *testing.T) {
	t.Run("zstd bomb declared 10 GB", func(t *testing.T) {
		// A 10 GB entry of zeros: only the first 64 MiB are in the archive,
		// which is enough to show extraction stops at once.
		var buf bytes.Buffer
		zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			t.Fatal(err)
		}
		tw := tar.NewWriter(zw)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Mode: 0o644, Size: 10 << 30}); err != nil {
			t.Fatal(err)
		}
		zeros := make([]byte, 1<<20)
		for range 64 {
			tw.Write(zeros)
		}
		zw.Close()
		tree, _, check := sandboxDirs(t)
		err = extractInto(t, tree, buf.Bytes(), nil, Env{MaxExtractBytes: 1 << 30})
		if !errors.Is(err, ErrLimit) {
			t.Fatalf("error %v, want ErrLimit", err)
		}
		if _, err := os.Stat(filepath.Join(tree, "bomb")); err == nil {
			t.Errorf("bomb was started")
		}
		check()
	})
	t.Run("zstd bomb over many entries", func(t *testing.T) {
		zeros := strings.Repeat("\x00", 1<<20)
		var ents []tarEntry
		for i := range 40 {
			ents = append(ents, file("f"+string(rune('a'+i)), zeros, 0o644))
		}
		archive := zst(t, mkTar(t, ents...))
		tree, _, check := sandboxDirs(t)
		err := extractInto(t, tree, archive, nil, Env{MaxExtractBytes: 8 << 20})
		if !errors.Is(err, ErrLimit) {
			t.Errorf("error %v, want ErrLimit", err)
		}
		check()
	})
	t.Run("header bytes count", func(t *testing.T) {
		var ents []tarEntry
		for range 100 {
			ents = append(ents, dir("d", 0o755))
		}
		err := extractInto(t, t.TempDir(), gz(t, mkTar(t, ents...)), nil, Env{MaxExtractBytes: 10 << 10})
		wantErr(t, err, "more than 10240 uncompressed bytes")
	})
	t.Run("a million entries", func(t *testing.T) {
		// Entries are produced on the fly; extraction stops at the cap and
		// the producer is stopped by the closed pipe.
		pr, pw := io.Pipe()
		done := make(chan int)
		go func() {
			tw := tar.NewWriter(pw)
			n := 0
			for ; n < 1_000_000; n++ {
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755}); err != nil {
					break
				}
			}
			pw.CloseWithError(tw.Close())
			done <- n
		}()
		tree := t.TempDir()
		x, err := openFsys(tree)
		if err != nil {
			t.Fatal(err)
		}
		defer x.Close()
		err = extractTar(context.Background(), pr, x, limits{entries: 1000}, 0)
		pr.CloseWithError(errors.New("stop"))
		if n := <-done; n >= 1_000_000 {
			t.Errorf("producer was not stopped")
		}
		if !errors.Is(err, ErrLimit) {
			t.Fatalf("error %v, want ErrLimit", err)
		}
		wantErr(t, err, "more than 1000 entries")
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		x, err := openFsys(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer x.Close()
		err = extractTar(ctx, bytes.NewReader(mkTar(t, file("f", "x", 0o644))), x, limits{}, 0)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
	})
}

// TestSecurityRow23DecompressionBomb: a small archive that expands without
// bound is stopped by the compression-ratio check once past RatioMinBytes,
// and any archive is stopped, with ErrLimit and not ENOSPC, before it fills
// the tree's filesystem.
func TestSecurityRow23DecompressionBomb(t *testing.T) {
	if dir := os.Getenv(smallFSEnv); dir != "" {
		smallFSChild(t, dir)
		return
	}
	bomb := func(t *testing.T, size int64) []byte {
		var buf bytes.Buffer
		zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			t.Fatal(err)
		}
		tw := tar.NewWriter(zw)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Mode: 0o644, Size: size}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(tw, zeroReader{}, size); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	t.Run("ratio", func(t *testing.T) {
		archive := bomb(t, 512<<20)
		t.Logf("%d bytes of archive for 512 MiB", len(archive))
		tree, _, check := sandboxDirs(t)
		err := extractInto(t, tree, archive, nil, Env{})
		if !errors.Is(err, ErrLimit) {
			t.Fatalf("error %v, want ErrLimit", err)
		}
		wantErr(t, err, "expands more than 1000:1")
		fi, err := os.Stat(filepath.Join(tree, "zeros"))
		if err == nil && fi.Size() > RatioMinBytes+4<<20 {
			t.Errorf("%d bytes were written before the check", fi.Size())
		}
		check()
	})
	t.Run("ratio option", func(t *testing.T) {
		// The same kind of archive passes with the check off or set higher.
		archive := bomb(t, RatioMinBytes+1<<20)
		for _, r := range []int64{0, 100000} {
			if err := extractInto(t, t.TempDir(), archive, map[string]any{"max_ratio": r}, Env{}); err != nil {
				t.Errorf("max_ratio %d: %v", r, err)
			}
		}
		err := extractInto(t, t.TempDir(), archive, map[string]any{"max_ratio": -1}, Env{})
		wantErr(t, err, "max_ratio: -1 is negative")
	})
	t.Run("free space", func(t *testing.T) {
		if _, err := exec.LookPath("unshare"); err != nil || os.Geteuid() != 0 {
			t.Skip("needs root and unshare to mount a small tmpfs")
		}
		dir := t.TempDir()
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-ec",
			`mount -t tmpfs -o size=16m tmpfs "$1"; exec "$2" -test.run='^TestSecurityRow23DecompressionBomb$' -test.v`, "sh", dir, exe)
		cmd.Env = append(os.Environ(), smallFSEnv+"="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil && strings.Contains(string(out), "unshare failed") {
			t.Skipf("unshare unavailable: %s", out)
		}
		if err != nil || !strings.Contains(string(out), "small filesystem: OK") {
			t.Fatalf("small-filesystem child: %v\n%s", err, out)
		}
	})
}

// smallFSEnv names the 16 MiB tmpfs a child of the row 23 test extracts into.
const smallFSEnv = "STRATA_TEST_SMALL_FS"

// smallFSChild extracts archives larger than the free space of dir.
func smallFSChild(t *testing.T, dir string) {
	random := func(n int) string {
		b := make([]byte, n)
		x := uint64(88172645463325252)
		for i := range b {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			b[i] = byte(x)
		}
		return string(b)
	}
	// One entry declaring more than the free space is refused at its header.
	err := extractInto(t, dir, mkTar(t, file("big", random(20<<20), 0o644)), nil, Env{})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("one large entry: error %v, want ErrLimit", err)
	}
	wantErr(t, err, "90% of the free space on the tree's filesystem")
	// Many entries, each small, are stopped by the running count before ENOSPC.
	var ents []tarEntry
	for i := range 20 {
		ents = append(ents, file(fmt.Sprintf("f%02d", i), random(1<<20), 0o644))
	}
	err = extractInto(t, dir, zst(t, mkTar(t, ents...)), nil, Env{})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("many entries: error %v, want ErrLimit", err)
	}
	wantErr(t, err, "90% of the free space on the tree's filesystem")
	fmt.Println("small filesystem: OK")
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestExtractHardLinkOwnerRecorded: with a journal (a build without root), a
// hard link's name gets the owner of the file it links to, as its inode does
// as root: the link came out 0:0 in every output while the target was
// 123:456.
func TestExtractHardLinkOwnerRecorded(t *testing.T) {
	archive := mkTar(t,
		tarEntry{tar.Header{Typeflag: tar.TypeReg, Name: "x/f1", Mode: 0o644, Uid: 123, Gid: 456, Size: 1}, "1"},
		link(tar.TypeLink, "x/hard", "x/f1"),
	)
	var journal bytes.Buffer
	if err := extractInto(t, t.TempDir(), archive, nil, Env{Records: &journal}); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadRecords(&journal)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"x/f1", "x/hard"} {
		if r, ok := recs[p]; !ok || r.Owner == nil || *r.Owner != [2]int{123, 456} {
			t.Errorf("%s: record %+v, want owner 123:456", p, r)
		}
	}
}
