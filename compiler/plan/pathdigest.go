package plan

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
	var entries []PathEntry
	err := WalkPathSource(ctx, dir, rel, func(e SourceEntry) error {
		pe := PathEntry{Path: e.Path}
		switch {
		case e.Info.Mode().IsRegular():
			f, err := e.Open()
			if err != nil {
				return err
			}
			defer f.Close()
			h := sha256.New()
			n, err := io.Copy(h, f)
			if err != nil {
				return fmt.Errorf("%s: %w", e.Path, err)
			}
			pe.Type, pe.Exec, pe.Size, pe.SHA256 = "file", e.Info.Mode()&0o111 != 0, n, hex.EncodeToString(h.Sum(nil))
		case e.Info.IsDir():
			pe.Type = "dir"
		default:
			pe.Type, pe.Target = "symlink", e.Target
		}
		entries = append(entries, pe)
		return nil
	})
	if err != nil {
		return "", err
	}
	return DigestPathEntries(entries), nil
}

// SourceEntry is one entry of a local source.
type SourceEntry struct {
	// Path is slash-separated and relative to the source, "." for a source
	// that is a single file.
	Path string
	// Info is the entry's Lstat.
	Info fs.FileInfo
	// Target is a symbolic link's target, recorded as it is, never followed.
	Target string
	// Open opens a regular file, inside the workspace.
	Open func() (fs.File, error)
}

// ErrOutsideWorkspace is wrapped when a path source leads out of the workspace.
var ErrOutsideWorkspace = errors.New("leads outside the workspace")

// WalkPathSource calls fn for the local source rel of the workspace dir and, for
// a directory, every entry below it in lexical order (the source directory
// itself excluded). Everything is resolved through an os.Root on the workspace,
// so neither rel nor a symbolic link on its way (lnk -> /etc) reaches a file
// outside it; symbolic links inside the source are entries, never followed. A
// source that is a link to a file is that file, and a trailing slash follows a
// final link to the directory it names, as in POSIX; both within the
// workspace (a link to nothing there is an error).
func WalkPathSource(ctx context.Context, dir, rel string, fn func(SourceEntry) error) error {
	fail := func(err error) error { return fmt.Errorf("source path %q: %w", rel, err) }
	if err := CheckRelPath(rel); err != nil {
		return fail(fmt.Errorf("%w: %v", ErrOutsideWorkspace, err))
	}
	if err := insideWorkspace(dir, rel); err != nil {
		return fail(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fail(err)
	}
	defer root.Close()
	name := strings.TrimSuffix(filepath.FromSlash(rel), "/")
	stat := root.Lstat
	if strings.HasSuffix(rel, "/") {
		stat = root.Stat
	}
	info, err := stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		// os.Root's own words name its syscall: "statat x: no such file".
		return fail(fmt.Errorf("%w in the workspace", fs.ErrNotExist))
	}
	if err != nil {
		return fail(err)
	}
	if info.Mode()&fs.ModeSymlink != 0 {
		// A source naming a link to a file is that file, as the workspace
		// shows it (data.txt -> real.txt): kept as a link, it named nothing
		// in the sandbox. os.Root follows it only within the workspace.
		target, err := root.Stat(name)
		if err != nil {
			return fail(fmt.Errorf("%w: it is a symbolic link to nothing inside the workspace", ErrOutsideWorkspace))
		}
		if target.Mode().IsRegular() {
			info = target
		}
	}
	if !info.IsDir() {
		e, err := sourceEntry(root, name, ".", info)
		if err != nil {
			return fail(err)
		}
		return fn(e)
	}
	sub, err := root.OpenRoot(name)
	if err != nil {
		return fail(err)
	}
	defer sub.Close()
	err = fs.WalkDir(sub.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		info, err := sub.Lstat(p)
		if err != nil {
			return err
		}
		e, err := sourceEntry(sub, p, p, info)
		if err != nil {
			return err
		}
		return fn(e)
	})
	if err != nil {
		return fail(err)
	}
	return nil
}

func sourceEntry(r *os.Root, name, rel string, info fs.FileInfo) (SourceEntry, error) {
	e := SourceEntry{Path: filepath.ToSlash(rel), Info: info}
	switch {
	case info.Mode().IsRegular():
		e.Open = func() (fs.File, error) { return r.Open(name) }
	case info.IsDir():
	case info.Mode()&fs.ModeSymlink != 0:
		t, err := r.Readlink(name)
		if err != nil {
			return e, err
		}
		e.Target = t
	default:
		return e, fmt.Errorf("%s: unsupported file type %s", rel, info.Mode().Type())
	}
	return e, nil
}

// insideWorkspace names the way out when rel resolves outside dir: os.Root
// would refuse it anyway, with a less helpful message.
func insideWorkspace(dir, rel string) error {
	ws, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if !strings.HasSuffix(rel, "/") {
		p = filepath.Dir(p) // a final link is checked by the walk (os.Root)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil // a missing path is reported by the walk
	}
	if r, err := filepath.Rel(ws, real); err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return fmt.Errorf("%w: it resolves to %s through a symbolic link", ErrOutsideWorkspace, real)
	}
	return nil
}
