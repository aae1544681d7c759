package builtin

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// extractOptions are the options of strata.extract:
//
//	{"input": "name", "path": "", "dst": "/", "format": "auto", "strip_components": 0,
//	 "max_ratio": 1000}
//
// input is required. path names the archive inside the input when the input
// is a directory, and is empty (the default) when the input is the archive
// file itself. dst defaults to "/". format is "auto" (the default, detected
// from magic bytes), "tar", "tar.gz" or "tar.zst". strip_components (default
// 0) drops that many leading components from entry names and hard link
// targets, skipping entries that have no more, like GNU tar. max_ratio
// (default DefaultMaxRatio, 0 for none) is the largest expansion allowed:
// once more than RatioMinBytes are extracted, the uncompressed bytes may not
// exceed max_ratio times the archive bytes read.
type extractOptions struct {
	Input           string `json:"input"`
	Path            string `json:"path"`
	Dst             string `json:"dst"`
	Format          string `json:"format"`
	StripComponents int    `json:"strip_components"`
	MaxRatio        *int64 `json:"max_ratio"`
}

// Compression-ratio check of strata.extract.
const (
	// DefaultMaxRatio is the default max_ratio. Real archives expand 2-20
	// times (a Debian root as tar.zst about 4); deflate cannot exceed about
	// 1032:1, and zstd passes 1000:1 only on long runs of one byte, which is
	// what a bomb is made of (a 150 KB tar.zst expanded to 4 GiB: 28000:1).
	DefaultMaxRatio int64 = 1000
	// RatioMinBytes is how much an archive may expand before its ratio is
	// checked (64 MiB): below it even a bomb costs little disk, and small
	// archives of zeros, such as an empty filesystem image, stay legal.
	RatioMinBytes int64 = 64 << 20
)

// freeSpaceShare is the part of the tree filesystem's free space (9/10) an
// archive may fill: the cap is met with a clear error before the disk is
// full, and the commit that follows still has room.
const freeSpaceShare = 0.9

// zstdMaxWindow bounds the zstd decoder's window (128 MiB, zstd's default
// limit for --long), and so its memory.
const zstdMaxWindow = 1 << 27

func runExtract(ctx context.Context, options []byte, env Env) error {
	var o extractOptions
	if err := decode(options, &o); err != nil {
		return err
	}
	if o.Dst == "" {
		o.Dst = "/"
	}
	if o.Format == "" {
		o.Format = "auto"
	}
	switch o.Format {
	case "auto", "tar", "tar.gz", "tar.zst":
	default:
		return fmt.Errorf("format: %q is not one of auto, tar, tar.gz, tar.zst", o.Format)
	}
	if o.StripComponents < 0 || o.StripComponents > maxPathLen {
		return fmt.Errorf("strip_components: %d is out of range", o.StripComponents)
	}
	ratio := or(o.MaxRatio, DefaultMaxRatio)
	if ratio < 0 {
		return fmt.Errorf("max_ratio: %d is negative (0 turns the check off)", ratio)
	}
	dstRel, err := treePath("dst", o.Dst)
	if err != nil {
		return err
	}
	inPath, err := input(env, "input", o.Input)
	if err != nil {
		return err
	}
	f, err := openArchive(inPath, o.Input, o.Path)
	if err != nil {
		return err
	}
	defer f.Close()

	t, err := openTree(env)
	if err != nil {
		return fmt.Errorf("open tree: %w", err)
	}
	defer t.Close()
	dst, err := t.resolveDir(dstRel, true)
	if err != nil {
		return fmt.Errorf("dst: %w", err)
	}
	x, err := t.sub(dst)
	if err != nil {
		return fmt.Errorf("dst: %w", err)
	}
	defer x.Close()

	compressed := &byteCounter{r: f}
	r, closeR, err := decompress(compressed, o.Format)
	if err != nil {
		return fmt.Errorf("input %q: %w", o.Input, err)
	}
	defer closeR()
	lim := limits{bytes: env.MaxExtractBytes, entries: env.MaxExtractEntries, ratio: ratio, compressed: compressed}
	var st unix.Statfs_t
	if err := unix.Statfs(env.Tree, &st); err != nil {
		return fmt.Errorf("free space of the tree: %w", err)
	}
	lim.free = int64(float64(st.Bavail) * float64(st.Bsize) * freeSpaceShare)
	if err := extractTar(ctx, r, x, lim, o.StripComponents); err != nil {
		return fmt.Errorf("input %q: %w", o.Input, err)
	}
	return nil
}

// openArchive opens the archive: the input itself when p is empty, else the
// file p inside the input directory, resolved within the input.
func openArchive(inPath, name, p string) (*os.File, error) {
	if p == "" {
		f, err := os.Open(inPath)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", name, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("input %q: %w", name, err)
		}
		if fi.IsDir() {
			f.Close()
			return nil, fmt.Errorf("path: input %q is a directory, so path must name the archive inside it", name)
		}
		if !fi.Mode().IsRegular() {
			f.Close()
			return nil, fmt.Errorf("input %q: not a regular file", name)
		}
		return f, nil
	}
	rel, err := treePath("path", "/"+strings.TrimPrefix(p, "/"))
	if err != nil {
		return nil, err
	}
	if rel == "." {
		return nil, errors.New("path: must name a file inside the input")
	}
	in, err := openFsys(inPath)
	if err != nil {
		return nil, fmt.Errorf("path: input %q must be a directory when path is set: %w", name, err)
	}
	defer in.Close()
	full, err := in.locate(rel, false)
	if err != nil {
		return nil, fmt.Errorf("path: input %q: %w", name, err)
	}
	fi, err := in.root.Lstat(full)
	if err != nil {
		return nil, fmt.Errorf("path: input %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("path: input %q: %s is not a regular file", name, show(rel))
	}
	f, err := in.root.Open(full)
	if err != nil {
		return nil, fmt.Errorf("path: input %q: %w", name, err)
	}
	return f, nil
}

// decompress returns the tar stream of r in the given format, detecting it
// from magic bytes for "auto".
func decompress(r io.Reader, format string) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if format == "auto" {
		magic, _ := br.Peek(262)
		switch {
		case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
			format = "tar.gz"
		case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
			format = "tar.zst"
		case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
			return nil, nil, errors.New("xz archives are not supported (use tar, tar.gz or tar.zst)")
		case bytes.HasPrefix(magic, []byte("BZh")):
			return nil, nil, errors.New("bzip2 archives are not supported (use tar, tar.gz or tar.zst)")
		default:
			format = "tar"
		}
	}
	switch format {
	case "tar.gz":
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case "tar.zst":
		zr, err := zstd.NewReader(br,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	default:
		return br, func() {}, nil
	}
}

type limits struct {
	bytes   int64
	entries int64
	// free is the share of the tree filesystem's free space the archive may
	// fill; zero means unknown.
	free int64
	// ratio is the largest expansion over compressed's count; zero turns
	// the check off.
	ratio      int64
	compressed *byteCounter
}

// byteCounter counts the bytes read through it.
type byteCounter struct {
	r io.Reader
	n int64
}

func (c *byteCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// countingReader fails once more than limit bytes have been read, when the
// expansion over compressed passes ratio, and when ctx is done.
type countingReader struct {
	ctx        context.Context
	r          io.Reader
	n          int64
	limit      int64
	limitWhy   string
	ratio      int64
	compressed *byteCounter
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.limit {
		return 0, fmt.Errorf("%w: more than %d uncompressed bytes%s", ErrLimit, c.limit, c.limitWhy)
	}
	if c.ratio > 0 && c.compressed != nil && c.n > RatioMinBytes && c.n/c.ratio > c.compressed.n {
		return 0, fmt.Errorf("%w: the archive expands more than %d:1 (%d bytes from the first %d); set max_ratio higher, or 0, if that is expected",
			ErrLimit, c.ratio, c.n, c.compressed.n)
	}
	return n, err
}

// extractTar extracts the tar stream r into x, entry by entry.
func extractTar(ctx context.Context, r io.Reader, x *fsys, lim limits, strip int) error {
	if lim.bytes <= 0 {
		lim.bytes = DefaultMaxExtractBytes
	}
	if lim.entries <= 0 {
		lim.entries = DefaultMaxExtractEntries
	}
	why := ""
	if lim.free > 0 && lim.free < lim.bytes {
		lim.bytes = lim.free
		why = fmt.Sprintf(" (%.0f%% of the free space on the tree's filesystem)", freeSpaceShare*100)
	}
	cr := &countingReader{ctx: ctx, r: r, limit: lim.bytes, limitWhy: why, ratio: lim.ratio, compressed: lim.compressed}
	tr := tar.NewReader(cr)
	var entries, declared int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		// Our own checks replace archive/tar's optional insecure-path check.
		if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && hdr != nil) {
			if errors.Is(err, tar.ErrFieldTooLong) {
				return fmt.Errorf("%w: read archive: %w", ErrLimit, err)
			}
			return fmt.Errorf("read archive: %w", err)
		}
		if entries++; entries > lim.entries {
			return fmt.Errorf("%w: more than %d entries", ErrLimit, lim.entries)
		}
		// Declared sizes count too: a sparse entry expands beyond what is read.
		if hdr.Size < 0 || hdr.Size > lim.bytes-declared {
			return fmt.Errorf("entry %s: %w: declares %d bytes, beyond the %d uncompressed bytes allowed%s", quoteName(hdr.Name), ErrLimit, hdr.Size, lim.bytes, why)
		}
		declared += hdr.Size
		if err := extractEntry(tr, hdr, x, strip); err != nil {
			return fmt.Errorf("entry %s: %w", quoteName(hdr.Name), err)
		}
	}
}

// quoteName quotes an entry name for an error, shortened if absurdly long.
func quoteName(name string) string {
	if len(name) > 200 {
		return fmt.Sprintf("%q... (%d bytes)", name[:200], len(name))
	}
	return fmt.Sprintf("%q", name)
}

// entryPath turns an archive name into a path relative to the extraction
// directory: leading slashes are removed (as GNU tar does), "." components
// dropped, ".." rejected, then strip components removed. ok is false when
// the entry is stripped away entirely.
func entryPath(name string, strip int) (rel string, ok bool, err error) {
	switch {
	case name == "":
		return "", false, fmt.Errorf("%w: empty name", ErrUnsafeEntry)
	case len(name) > maxPathLen:
		return "", false, fmt.Errorf("%w: name longer than %d bytes", ErrLimit, maxPathLen)
	case strings.ContainsRune(name, 0):
		return "", false, fmt.Errorf("%w: name contains a NUL byte", ErrUnsafeEntry)
	}
	comps := splitRel(name)
	for _, c := range comps {
		if c == ".." {
			return "", false, fmt.Errorf("%w: name contains \"..\"", ErrUnsafeEntry)
		}
		if len(c) > maxNameLen {
			return "", false, fmt.Errorf("%w: name has a component longer than %d bytes", ErrLimit, maxNameLen)
		}
	}
	if strip > 0 {
		if len(comps) <= strip {
			return "", false, nil
		}
		comps = comps[strip:]
	}
	if len(comps) == 0 {
		return ".", true, nil
	}
	return strings.Join(comps, "/"), true, nil
}

// extractEntry writes one entry. The parent of every entry is resolved in x
// with chroot semantics, so nothing is written outside x.
func extractEntry(tr io.Reader, hdr *tar.Header, x *fsys, strip int) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	rel, ok, err := entryPath(hdr.Name, strip)
	if err != nil || !ok {
		return err
	}
	mode := uint32(hdr.Mode) & 0o7777
	own := owner{hdr.Uid, hdr.Gid, false}
	if hdr.Uid < 0 || hdr.Uid > maxID || hdr.Gid < 0 || hdr.Gid > maxID {
		return fmt.Errorf("%w: owner %d:%d out of range", ErrUnsafeEntry, hdr.Uid, hdr.Gid)
	}
	if rel == "." && hdr.Typeflag != tar.TypeDir {
		// A symbolic link "." would redirect every later entry (umoci's
		// CVE-2021-29136); no non-directory may replace the root.
		return fmt.Errorf("%w: a %s cannot replace the extraction directory", ErrUnsafeEntry, typeName(hdr.Typeflag))
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.extractDir(rel, mode, own)
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
		full, err := x.locate(rel, true)
		if err != nil {
			return err
		}
		if err := x.clearForEntry(full); err != nil {
			return err
		}
		return x.writeFile(full, tr, mode, own)
	case tar.TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) > maxPathLen || strings.ContainsRune(hdr.Linkname, 0) {
			return fmt.Errorf("%w: invalid symbolic link target", ErrUnsafeEntry)
		}
		full, err := x.locate(rel, true)
		if err != nil {
			return err
		}
		if err := x.clearForEntry(full); err != nil {
			return err
		}
		if err := x.root.Symlink(hdr.Linkname, full); err != nil {
			return err
		}
		return x.lchown(full, own)
	case tar.TypeLink:
		trel, ok, err := entryPath(hdr.Linkname, strip)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		if !ok || trel == "." {
			return fmt.Errorf("%w: hard link target %q is not a file in the archive", ErrUnsafeEntry, hdr.Linkname)
		}
		target, err := x.locate(trel, false)
		if err != nil {
			return fmt.Errorf("%w: hard link target %q: %w", ErrUnsafeEntry, hdr.Linkname, err)
		}
		tfi, err := x.root.Lstat(target)
		if err != nil {
			return fmt.Errorf("%w: hard link target %q: %w", ErrUnsafeEntry, hdr.Linkname, err)
		}
		if !tfi.Mode().IsRegular() && tfi.Mode()&fs.ModeSymlink == 0 {
			return fmt.Errorf("%w: hard link target %q is a %s, not a file", ErrUnsafeEntry, hdr.Linkname, tfi.Mode().Type())
		}
		full, err := x.locate(rel, true)
		if err != nil {
			return err
		}
		if full == target {
			return nil
		}
		if err := x.clearForEntry(full); err != nil {
			return err
		}
		if err := x.root.Link(target, full); err != nil {
			return err
		}
		if x.rec != nil {
			// The journal holds owners by path: the new name of the
			// target's file gets the target's, as its inode does as root.
			o := x.ownerOf(target, tfi)
			if err := x.rec.record(Record{Path: x.treeRel(full), Owner: &[2]int{o.uid, o.gid}}); err != nil {
				return fmt.Errorf("record owner of %s: %w", show(full), err)
			}
		}
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return fmt.Errorf("%w: %s entries are not allowed in build trees", ErrUnsafeEntry, typeName(hdr.Typeflag))
	default:
		return fmt.Errorf("%w: unsupported entry type %q", ErrUnsafeEntry, hdr.Typeflag)
	}
}

func typeName(flag byte) string {
	switch flag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
		return "file"
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symbolic link"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("type %q", flag)
}

// clearForEntry makes room for a non-directory entry at full: an existing
// file or link is removed (last entry wins), an empty directory too; a
// non-empty directory is an error.
func (x *fsys) clearForEntry(full string) error {
	isDir, err := x.clear(full)
	if err != nil || !isDir {
		return err
	}
	if err := x.root.Remove(full); err != nil {
		return fmt.Errorf("cannot replace directory %s: %w", show(full), err)
	}
	return nil
}

// extractDir creates or updates the directory rel. An existing symbolic link
// to a directory is kept (like GNU tar's --keep-directory-symlink), so that
// archives extract onto merged-/usr trees.
func (x *fsys) extractDir(rel string, mode uint32, own owner) error {
	if rel == "." {
		return x.setAttrs(".", mode, own)
	}
	full, err := x.locate(rel, true)
	if err != nil {
		return err
	}
	fi, err := x.root.Lstat(full)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case fi.IsDir():
		return x.setAttrs(full, mode, own)
	case fi.Mode()&fs.ModeSymlink != 0:
		if _, err := x.resolveDir(full, false); err == nil {
			return nil
		}
		fallthrough
	default:
		if err := x.root.Remove(full); err != nil {
			return err
		}
	}
	if err := x.root.Mkdir(full, 0o700); err != nil {
		return err
	}
	return x.setAttrs(full, mode, own)
}
