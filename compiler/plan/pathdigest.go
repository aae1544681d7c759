package plan

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// PathDigest is Source.Digest of a local source: it hashes the source by content: every file's relative path, type,
// executable bit and bytes, in path order. Owners and times do not count, so a
// fresh checkout of the same files gives the same digest. The compiler records it and
// the executor checks the files it copies against it.
func PathDigest(ctx context.Context, dir, rel string) (string, error) {
	root := filepath.Join(dir, filepath.FromSlash(rel))
	info, err := os.Lstat(root)
	if err != nil {
		return "", fmt.Errorf("source path: %w", err)
	}
	h := sha256.New()
	if !info.IsDir() {
		if err := hashEntry(h, ".", root, info); err != nil {
			return "", err
		}
		return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
	}
	var paths []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("source path: %w", err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		r, _ := filepath.Rel(root, p)
		info, err := os.Lstat(p)
		if err != nil {
			return "", fmt.Errorf("source path: %w", err)
		}
		if err := hashEntry(h, filepath.ToSlash(r), p, info); err != nil {
			return "", err
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func hashEntry(h io.Writer, rel, p string, info fs.FileInfo) error {
	switch {
	case info.Mode().IsRegular():
		fmt.Fprintf(h, "file %q %t %d\n", rel, info.Mode()&0o111 != 0, info.Size())
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("source path: %w", err)
		}
		defer f.Close()
		if _, err := io.Copy(h, f); err != nil {
			return fmt.Errorf("source path %s: %w", rel, err)
		}
	case info.IsDir():
		fmt.Fprintf(h, "dir %q\n", rel)
	case info.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("source path: %w", err)
		}
		fmt.Fprintf(h, "symlink %q %q\n", rel, t)
	default:
		return fmt.Errorf("source path %s: unsupported file type %s", rel, info.Mode().Type())
	}
	return nil
}
