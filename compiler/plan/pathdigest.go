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

// PathEntry is one entry of a local source as its digest sees it. Owners and
// times do not count, so a fresh checkout of the same files gives the same digest.
type PathEntry struct {
	// Path is slash-separated and relative to the source; "." for a source that
	// is a single file (the root directory of a directory source is implicit).
	Path string
	// Type is "file", "dir" or "symlink".
	Type string
	// Exec is a file's executable bit (any of 0o111).
	Exec bool
	// Size and SHA256 (hex) describe a file's content; Target a symlink's.
	Size   int64
	SHA256 string
	Target string
}

// DigestPathEntries is Source.Digest of a local source: the SHA-256 of its
// entries in path order. It hashes each file's content digest, not its bytes, so
// the executor can compute it from the tree it stored instead of reading the
// source again.
func DigestPathEntries(entries []PathEntry) string {
	sorted := append([]PathEntry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	h := sha256.New()
	for _, e := range sorted {
		switch e.Type {
		case "file":
			fmt.Fprintf(h, "file %q %t %d %s\n", e.Path, e.Exec, e.Size, e.SHA256)
		case "symlink":
			fmt.Fprintf(h, "symlink %q %q\n", e.Path, e.Target)
		default:
			fmt.Fprintf(h, "dir %q\n", e.Path)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// PathDigest reads the local source rel of the workspace dir and returns its
// digest (DigestPathEntries). The compiler records it in the plan.
func PathDigest(ctx context.Context, dir, rel string) (string, error) {
	root := filepath.Join(dir, filepath.FromSlash(rel))
	info, err := os.Lstat(root)
	if err != nil {
		return "", fmt.Errorf("source path: %w", err)
	}
	if !info.IsDir() {
		e, err := pathEntry(".", root, info)
		if err != nil {
			return "", err
		}
		return DigestPathEntries([]PathEntry{e}), nil
	}
	var entries []PathEntry
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(root, p)
		e, err := pathEntry(filepath.ToSlash(r), p, info)
		if err != nil {
			return err
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("source path: %w", err)
	}
	return DigestPathEntries(entries), nil
}

func pathEntry(rel, p string, info fs.FileInfo) (PathEntry, error) {
	switch {
	case info.Mode().IsRegular():
		f, err := os.Open(p)
		if err != nil {
			return PathEntry{}, fmt.Errorf("source path: %w", err)
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return PathEntry{}, fmt.Errorf("source path %s: %w", rel, err)
		}
		return PathEntry{Path: rel, Type: "file", Exec: info.Mode()&0o111 != 0, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
	case info.IsDir():
		return PathEntry{Path: rel, Type: "dir"}, nil
	case info.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(p)
		if err != nil {
			return PathEntry{}, fmt.Errorf("source path: %w", err)
		}
		return PathEntry{Path: rel, Type: "symlink", Target: t}, nil
	}
	return PathEntry{}, fmt.Errorf("source path %s: unsupported file type %s", rel, info.Mode().Type())
}
