package output

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/executor/tree"
)

// tarHeader returns the header of e: PAX format, no owner names, ModTime the epoch
// and no access or change times, so the header bytes depend on the manifest only.
func tarHeader(e tree.Entry, mtime time.Time) (*tar.Header, error) {
	h := &tar.Header{
		Format:  tar.FormatPAX,
		Name:    e.Path,
		Mode:    int64(e.Mode),
		Uid:     e.UID,
		Gid:     e.GID,
		ModTime: mtime,
	}
	switch e.Type {
	case tree.Dir:
		h.Typeflag = tar.TypeDir
		h.Name += "/"
	case tree.File:
		h.Typeflag = tar.TypeReg
		h.Size = e.Size
	case tree.Symlink:
		h.Typeflag = tar.TypeSymlink
		h.Linkname = e.Target
	case tree.CharDev:
		h.Typeflag = tar.TypeChar
		h.Devmajor, h.Devminor = int64(e.Major), int64(e.Minor)
	case tree.BlockDev:
		h.Typeflag = tar.TypeBlock
		h.Devmajor, h.Devminor = int64(e.Major), int64(e.Minor)
	case tree.Fifo:
		h.Typeflag = tar.TypeFifo
	default:
		return nil, fmt.Errorf("%q: unknown entry type %q", e.Path, e.Type)
	}
	return h, nil
}

// writeTar writes t as a tar stream to w: entries in manifest order (sorted, so
// parents come before children), the root directory omitted, file contents checked
// against the manifest's size and digest. The end-of-archive marker is written.
func writeTar(ctx context.Context, w io.Writer, t *tree.Tree, c Contents, epoch int64) error {
	tw := tar.NewWriter(w)
	mtime := time.Unix(epoch, 0)
	for _, e := range t.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tarHeader(e, mtime)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("tar header %q: %w", e.Path, err)
		}
		if e.Type != tree.File {
			continue
		}
		if err := copyBlob(tw, c, e); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("close tar: %w", err)
	}
	return nil
}

// copyBlob copies the contents of file entry e to w, checking size and digest.
func copyBlob(w io.Writer, c Contents, e tree.Entry) error {
	rc, err := c.OpenBlob(e.Digest)
	if err != nil {
		return fmt.Errorf("open %s for %q: %w", e.Digest, e.Path, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(rc, e.Size+1))
	if err != nil && err != tar.ErrWriteTooLong {
		return fmt.Errorf("copy %s for %q: %w", e.Digest, e.Path, err)
	}
	if n != e.Size || err == tar.ErrWriteTooLong {
		return fmt.Errorf("%w: %q: blob %s is not %d bytes long", ErrContent, e.Path, e.Digest, e.Size)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != e.Digest {
		return fmt.Errorf("%w: %q: blob %s has digest %s", ErrContent, e.Path, e.Digest, got)
	}
	return nil
}

// zstdDefaultLevel is the level used when Options.Compression is empty.
const zstdDefaultLevel = zstd.SpeedDefault

// zstdLevel maps Options.Compression to a zstd encoder level.
func zstdLevel(s string) (zstd.EncoderLevel, error) {
	switch s {
	case "", "default":
		return zstd.SpeedDefault, nil
	case "fastest":
		return zstd.SpeedFastest, nil
	case "better":
		return zstd.SpeedBetterCompression, nil
	case "best":
		return zstd.SpeedBestCompression, nil
	}
	return 0, fmt.Errorf("%w: zstd compression %q (want fastest, default, better or best)", ErrInvalidOptions, s)
}

// newZstdWriter returns a zstd encoder with fixed settings: one goroutine (so block
// boundaries never depend on scheduling), a frame checksum and the given level.
func newZstdWriter(w io.Writer, level zstd.EncoderLevel) (*zstd.Encoder, error) {
	return zstd.NewWriter(w,
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderCRC(true),
		zstd.WithLowerEncoderMem(false),
	)
}

func writeTarFile(ctx context.Context, t *tree.Tree, c Contents, opts Options, dst string) (Result, error) {
	level := zstd.SpeedDefault
	if opts.Format == FormatTarZstd {
		var err error
		if level, err = zstdLevel(opts.Compression); err != nil {
			return Result{}, err
		}
	}
	return writeAtomic(dst, func(f *os.File) error {
		if opts.Format == FormatTar {
			bw := bufio.NewWriterSize(f, 1<<20)
			if err := writeTar(ctx, bw, t, c, opts.SourceDateEpoch); err != nil {
				return err
			}
			return bw.Flush()
		}
		zw, err := newZstdWriter(f, level)
		if err != nil {
			return err
		}
		if err := writeTar(ctx, zw, t, c, opts.SourceDateEpoch); err != nil {
			zw.Close()
			return err
		}
		return zw.Close()
	})
}
