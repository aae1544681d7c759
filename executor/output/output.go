package output

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/tree"
)

// Format names an output format.
type Format string

// The output formats Write produces.
const (
	// FormatTree writes the canonical tree manifest; the result digest is the tree digest.
	FormatTree Format = "tree"
	// FormatTar writes a PAX tar archive.
	FormatTar Format = "tar"
	// FormatTarZstd writes the FormatTar stream compressed with zstd.
	FormatTarZstd Format = "tar.zst"
	// FormatSquashfs writes a squashfs image made by mksquashfs.
	FormatSquashfs Format = "squashfs"
	// FormatExt4 writes an ext4 image made by mkfs.ext4 and fixed up by debugfs.
	FormatExt4 Format = "ext4"
	// FormatErofs writes an erofs image made by mkfs.erofs.
	FormatErofs Format = "erofs"
	// FormatOCI writes an OCI image layout directory holding one single-layer image.
	FormatOCI Format = "oci"
)

// Media types of the artifacts, as the registry layer publishes them (the
// table is compiler/plan.OutputFormats).
var (
	MediaTypeTree     = mediaType(FormatTree)
	MediaTypeTar      = mediaType(FormatTar)
	MediaTypeTarZstd  = mediaType(FormatTarZstd)
	MediaTypeSquashfs = mediaType(FormatSquashfs)
	MediaTypeExt4     = mediaType(FormatExt4)
	MediaTypeErofs    = mediaType(FormatErofs)
	// MediaTypeOCI is the media type of the image manifest an OCI result points at.
	MediaTypeOCI = mediaType(FormatOCI)
)

func mediaType(f Format) string {
	info, _ := plan.LookupOutput(string(f))
	return info.MediaType
}

// Formats returns every format Write accepts, in a fixed order.
func Formats() []Format {
	return []Format{FormatTree, FormatTar, FormatTarZstd, FormatSquashfs, FormatExt4, FormatErofs, FormatOCI}
}

// MediaType returns the media type of the artifact f produces, or "" for an unknown format.
func (f Format) MediaType() string { return mediaType(f) }

// Directory reports whether f's artifact is a directory (a tree, or an OCI
// image layout) rather than one file.
func (f Format) Directory() bool { return f == FormatTree || f == FormatOCI }

// Sentinel errors, wrapped with context by Write.
var (
	// ErrUnknownFormat is returned for a Format that is not one of Formats.
	ErrUnknownFormat = errors.New("unknown output format")
	// ErrInvalidOptions is returned when Options do not fit the format.
	ErrInvalidOptions = errors.New("invalid output options")
	// ErrContent is returned when a blob does not match the size or digest the tree records.
	ErrContent = errors.New("content does not match tree")
	// ErrCheckout is returned when Options.Checkout does not hold exactly the tree.
	ErrCheckout = errors.New("checkout does not match tree")
	// ErrUnsupported is returned when the format cannot represent the tree in this
	// environment, such as erofs with several owners when not running as root.
	ErrUnsupported = errors.New("unsupported")
	// ErrTooLarge is returned when an artifact would exceed a size limit, such as
	// an ext4 size beyond MaxExt4Size or the destination's free space.
	ErrTooLarge = errors.New("output too large")
)

// Contents gives access to the file contents a tree refers to by digest. The
// store's *store.Store satisfies it.
type Contents interface {
	// OpenBlob returns a reader of the blob with digest d.
	OpenBlob(d digest.Digest) (io.ReadCloser, error)
	// BlobPath returns a local file holding the blob with digest d, for tools that
	// need files. Write treats it as read-only: it never modifies the file, its
	// mode, owner or times, and only hardlinks it into private staging directories.
	// When the file cannot be read, Write falls back to OpenBlob.
	BlobPath(d digest.Digest) (string, error)
}

// Platform is the platform an OCI image is for.
type Platform struct {
	// OS defaults to "linux".
	OS string
	// Architecture is a GOARCH value such as "amd64" or "arm64"; it is required for FormatOCI.
	Architecture string
	// Variant is optional, e.g. "v8" for arm64.
	Variant string
}

// Options control Write. The zero value of every field but Format is usable.
type Options struct {
	// Format selects the artifact; it is required.
	Format Format
	// SourceDateEpoch is the Unix time every timestamp in the artifact is set to:
	// file times, filesystem creation times and the OCI "created" field. It defaults
	// to 0 (1970-01-01T00:00:00Z) and must not be negative.
	SourceDateEpoch int64
	// Name is the OCI reference name (annotation org.opencontainers.image.ref.name,
	// default "latest").
	Name string
	// Label is the ext4 volume label (at most 16 bytes, default none).
	Label string
	// Size is the ext4 image size in bytes, a multiple of 4096 and at most
	// MaxExt4Size. Zero, the default, computes a size from the tree. Other
	// formats ignore it.
	Size int64
	// InodesExtra is the number of free inodes an ext4 image has beyond those
	// the tree uses (default 0, besides a fixed slack of 21), for images that
	// are written to after they are made.
	InodesExtra int
	// Compression selects the compressor:
	//   - tar.zst: "fastest", "default" (the default), "better" or "best" zstd level;
	//   - squashfs: a mksquashfs compressor, default "zstd";
	//   - erofs: "" (the default, uncompressed), "lz4" or "lz4hc";
	//   - oci: the layer compression, "gzip" (the default) or "zstd".
	// Other formats ignore it.
	Compression string
	// Platform is the OCI image platform.
	Platform Platform
	// Entrypoint, Cmd, Env, User, WorkingDir, Labels and ExposedPorts (such as
	// "8080/tcp") go into the OCI image config. Env starts with a standard PATH
	// unless it sets PATH itself.
	Entrypoint   []string
	Cmd          []string
	Env          []string
	User         string
	WorkingDir   string
	Labels       map[string]string
	ExposedPorts []string
	// Version, when set, is the OCI image's version: the reference name
	// (unless Name is set) and the org.opencontainers.image.version annotation.
	Version string
	// Annotations go on the OCI image manifest and its index entry.
	Annotations map[string]string
	// Checkout is an optional directory already holding the tree as files, such as
	// a read-only hardlink farm of the store. Filesystem formats read file data from
	// it instead of materializing the tree; metadata always comes from the manifest.
	// It must hold exactly the tree's paths and types, or Write fails with ErrCheckout.
	Checkout string
	// TempDir is where staging directories are made; it defaults to os.TempDir().
	// It should be on the store's filesystem so that staging can hardlink blobs.
	TempDir string
}

// Result describes a written artifact.
type Result struct {
	// Path is the artifact: a file, or the layout directory for FormatOCI.
	Path string
	// Digest and Size are those of the artifact file; for FormatTree the digest is
	// the tree digest; for FormatOCI they are those of the image manifest.
	Digest digest.Digest
	Size   int64
	// MediaType is Format.MediaType() of the format written.
	MediaType string
}

// ToolError reports an external tool that failed, with the end of its stderr.
type ToolError struct {
	// Tool is the program's name, such as "mkfs.ext4".
	Tool string
	// Err is the exec error, or the context's error when the run was cancelled.
	Err error
	// Stderr is the last lines of the tool's stderr (or stdout when stderr was empty).
	Stderr string
}

func (e *ToolError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("%s: %v", e.Tool, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Tool, e.Err, e.Stderr)
}

func (e *ToolError) Unwrap() error { return e.Err }

// Write assembles t into an artifact of opts.Format at dst, reading file contents
// from c (and from opts.Checkout when set). The artifact appears at dst only when
// complete: it is written to a temporary name in dst's directory and renamed into
// place, replacing an existing dst; on error or cancellation nothing is left behind.
// Equal trees and options give byte-identical artifacts.
func Write(ctx context.Context, t *tree.Tree, c Contents, opts Options, dst string) (Result, error) {
	res, err := write(ctx, t, c, opts, dst)
	if err != nil {
		return Result{}, fmt.Errorf("write %s output %s: %w", opts.Format, dst, err)
	}
	return res, nil
}

func write(ctx context.Context, t *tree.Tree, c Contents, opts Options, dst string) (Result, error) {
	if err := t.Validate(); err != nil {
		return Result{}, err
	}
	if opts.SourceDateEpoch < 0 {
		return Result{}, fmt.Errorf("%w: negative SourceDateEpoch %d", ErrInvalidOptions, opts.SourceDateEpoch)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	var (
		res Result
		err error
	)
	switch opts.Format {
	case FormatTree:
		res, err = writeTreeManifest(t, dst)
	case FormatTar, FormatTarZstd:
		res, err = writeTarFile(ctx, t, c, opts, dst)
	case FormatSquashfs:
		res, err = writeSquashfs(ctx, t, c, opts, dst)
	case FormatExt4:
		res, err = writeExt4(ctx, t, c, opts, dst)
	case FormatErofs:
		res, err = writeErofs(ctx, t, c, opts, dst)
	case FormatOCI:
		res, err = writeOCI(ctx, t, c, opts, dst)
	default:
		return Result{}, fmt.Errorf("%w %q", ErrUnknownFormat, opts.Format)
	}
	if err != nil {
		return Result{}, err
	}
	res.MediaType = opts.Format.MediaType()
	return res, nil
}

func writeTreeManifest(t *tree.Tree, dst string) (Result, error) {
	b, err := t.Encode()
	if err != nil {
		return Result{}, err
	}
	return writeAtomic(dst, func(f *os.File) error {
		_, err := f.Write(b)
		return err
	})
}

// writeAtomic creates a temporary file next to dst, lets fill write it, and renames
// it to dst, returning the digest and size of what was written.
func writeAtomic(dst string, fill func(f *os.File) error) (Result, error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return Result{}, err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := fill(f); err != nil {
		return Result{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Result{}, err
	}
	res, err := commitFile(f, dst)
	if err != nil {
		return Result{}, err
	}
	ok = true
	return res, nil
}

// commitFile hashes f from its current offset, syncs and closes it, makes it
// readable by everyone and renames it to dst.
func commitFile(f *os.File, dst string) (Result, error) {
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Result{}, fmt.Errorf("hash %s: %w", f.Name(), err)
	}
	if err := f.Chmod(0o644); err != nil {
		return Result{}, err
	}
	if err := f.Sync(); err != nil {
		return Result{}, err
	}
	if err := f.Close(); err != nil {
		return Result{}, err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return Result{}, err
	}
	return Result{Path: dst, Digest: digest.NewDigest(digest.SHA256, h), Size: n}, nil
}

// writeWithTool runs build with the path of a fresh temporary file next to dst,
// then publishes that file as dst.
func writeWithTool(dst string, build func(tmp string) error) (Result, error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return Result{}, err
	}
	tmp := f.Name()
	f.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	if err := build(tmp); err != nil {
		return Result{}, err
	}
	if f, err = os.Open(tmp); err != nil {
		return Result{}, err
	}
	res, err := commitFile(f, dst)
	if err != nil {
		f.Close()
		return Result{}, err
	}
	ok = true
	return res, nil
}

// workDir makes a private temporary directory and returns a function removing it.
func workDir(opts Options, pattern string) (string, func(), error) {
	dir, err := os.MkdirTemp(opts.TempDir, pattern)
	if err != nil {
		return "", nil, err
	}
	return dir, func() { removeAll(dir) }, nil
}

// removeAll removes dir, first making its directories writable if needed (a staging
// tree may hold directories with modes such as 0500).
func removeAll(dir string) {
	if os.RemoveAll(dir) == nil {
		return
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	os.RemoveAll(dir)
}

// formatOctal formats mode bits for tools that take octal modes.
func formatOctal(m uint32) string { return strconv.FormatUint(uint64(m), 8) }

// tail returns the last few lines of a tool's stderr.
func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	lines := strings.Split(s, "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	s = strings.Join(lines, "\n")
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}
