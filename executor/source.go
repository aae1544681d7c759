package executor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/tree"
)

// runSource fetches a source into the store as a tree: a directory source (a
// path naming a directory, a git commit) becomes the tree of its contents; a
// single file (a url, a path naming a file) becomes a tree holding that one file
// under its base name, and stages that mount it see the file itself. Every entry
// is owned by 0:0 and keeps only its executable bit (sourceMode; a downloaded
// file is 0644).
func (r *LocalRunner) runSource(ctx context.Context, n *plan.Node) (Result, error) {
	var out Result
	src := n.Source
	if src == nil {
		return out, fmt.Errorf("source node has no source")
	}
	dir, err := r.st.MkdirTemp("source-")
	if err != nil {
		return out, err
	}
	defer r.st.Discard(dir)
	root := filepath.Join(dir, "tree")
	if err := os.Mkdir(root, 0o755); err != nil {
		return out, err
	}
	var file string
	switch {
	case src.URL != "":
		file, err = r.fetchURL(ctx, n, src, root)
	case src.Path != "":
		file, err = r.copyPath(ctx, src, root)
	case src.Git != "":
		if err = fetchGit(ctx, src, root); err == nil {
			err = normalizeModes(root)
		}
	default:
		err = fmt.Errorf("source has no url, path or git")
	}
	if err != nil {
		return out, err
	}
	tr, d, err := r.st.CommitDir(ctx, root)
	if err != nil {
		return out, err
	}
	// Check what was stored, from the digests the commit computed; a mismatch
	// records nothing (the linked objects are garbage for GC).
	if got, want := sourceContent(src, tr, file); got != want {
		switch {
		case strings.HasPrefix(src.URL, "file:"):
			// Saying what a host file hashes to would let a spec learn the
			// digest of any file strata can read (/etc/shadow).
			return out, fmt.Errorf("%w: %s does not have sha256 %s", ErrDigestMismatch, src.URL, want)
		case src.URL != "":
			return out, fmt.Errorf("%w: %s: expected sha256 %s, got %s", ErrDigestMismatch, src.URL, want, got)
		default:
			return out, fmt.Errorf("%w: path %s: compiled with %s, now %s (run the build again to recompile)", ErrSourceChanged, src.Path, want, got)
		}
	}
	if d, err = r.normalizeOwners(ctx, tr, d); err != nil {
		return out, err
	}
	desc, err := r.treeDesc(d)
	if err != nil {
		return Result{}, err
	}
	return Result{Tree: desc, File: file}, nil
}

// fileName returns a safe base name for a downloaded file.
func fileName(p string) string {
	name := path.Base(p)
	if name == "." || name == "/" || name == ".." || name == "" {
		return "source"
	}
	return name
}

// fetchURL downloads src.URL into root; runSource checks its sha256 from the
// digest the store computes when it commits the file.
func (r *LocalRunner) fetchURL(ctx context.Context, n *plan.Node, src *plan.Source, root string) (string, error) {
	u, err := url.Parse(src.URL)
	if err != nil {
		return "", fmt.Errorf("url %s: %w", src.URL, err)
	}
	name := fileName(u.Path)
	var body io.ReadCloser
	switch u.Scheme {
	case "file":
		f, err := os.Open(u.Path)
		if err != nil {
			return "", fmt.Errorf("fetch %s: %w", src.URL, err)
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			return "", fmt.Errorf("fetch %s: not a regular file", src.URL)
		}
		body = f
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.URL, nil)
		if err != nil {
			return "", err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return "", fmt.Errorf("fetch %s: %w", src.URL, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return "", fmt.Errorf("fetch %s: %s", src.URL, resp.Status)
		}
		body = resp.Body
	default:
		return "", fmt.Errorf("fetch %s: unsupported scheme %q", src.URL, u.Scheme)
	}
	defer body.Close()
	dst := filepath.Join(root, name)
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	pw := &progressWriter{emit: func(k int64) {
		ev := r.event(n, EventBytes)
		ev.Bytes = k
		r.events.emit(ev)
	}}
	_, err = io.Copy(io.MultiWriter(f, pw), &ctxReader{ctx: ctx, r: body})
	pw.flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", src.URL, err)
	}
	return name, nil
}

// httpClient bounds the phases of a download that can hang (connecting, TLS,
// waiting for the headers) but not the transfer itself, which may be large
// and slow; ctx ends it.
var httpClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   30 * time.Second,
	ResponseHeaderTimeout: time.Minute,
	ForceAttemptHTTP2:     true,
}}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// progressWriter reports transferred bytes at most every 200 ms.
type progressWriter struct {
	emit    func(int64)
	pending int64
	last    time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.pending += int64(len(b))
	if time.Since(p.last) > 200*time.Millisecond {
		p.flush()
	}
	return len(b), nil
}

func (p *progressWriter) flush() {
	if p.pending > 0 {
		p.emit(p.pending)
		p.pending = 0
	}
	p.last = time.Now()
}

// copyPath copies a workspace path into root, reading it through the
// workspace (plan.WalkPathSource), so the path or a link on its way cannot
// bring in a host file. It returns the file name for a single-file source.
func (r *LocalRunner) copyPath(ctx context.Context, src *plan.Source, root string) (string, error) {
	var file string
	err := plan.WalkPathSource(ctx, r.opts.Workspace, src.Path, func(e plan.SourceEntry) error {
		dst := filepath.Join(root, filepath.FromSlash(e.Path))
		if e.Path == "." {
			file = fileName(strings.TrimSuffix(src.Path, "/"))
			dst = filepath.Join(root, file)
		}
		return copyEntry(e, dst)
	})
	return file, err
}

// pathDigestOf is plan.DigestPathEntries of a stored source tree: file is the
// name of a single-file source's only entry (its path "." in the digest).
// sourceContent is what t (holding file, for a single-file source) has of
// src's content, and what src's key names: a url source's sha256, a path
// source's digest of its entries. Both are "" for a git source, keyed by a
// commit its tree does not show.
func sourceContent(src *plan.Source, t *tree.Tree, file string) (got, want string) {
	switch {
	case src.URL != "":
		e, _ := t.Lookup(file)
		return e.Digest.Encoded(), strings.TrimPrefix(src.SHA256, "sha256:")
	case src.Path != "" && src.Digest != "":
		return pathDigestOf(t, file), src.Digest
	}
	return "", ""
}

func pathDigestOf(t *tree.Tree, file string) string {
	entries := make([]plan.PathEntry, 0, len(t.Entries))
	for _, e := range t.Entries {
		pe := plan.PathEntry{Path: e.Path, Type: string(e.Type), Target: e.Target}
		if file != "" && e.Path == file {
			pe.Path = "."
		}
		if e.Type == tree.File {
			pe.Exec, pe.Size, pe.SHA256 = e.Mode&0o111 != 0, e.Size, e.Digest.Encoded()
		}
		entries = append(entries, pe)
	}
	return plan.DigestPathEntries(entries)
}

// sourceMode is the mode a source entry is stored with: the executable bit
// only, as git keeps it. A path source's key holds no more (the executable
// bit, in DigestPathEntries), and a git checkout's other bits come from the
// umask of whoever fetched it: keeping them gave one key two trees (after a
// chmod 0700 the build stayed cached with the old modes, and a shared cache
// would hold whichever machine's came first). Other modes are set by stages
// (strata.copy's mode, strata.files).
func sourceMode(m fs.FileMode) fs.FileMode {
	if m.IsDir() || m&0o111 != 0 {
		return 0o755
	}
	return 0o644
}

// normalizeModes gives every file and directory under root its sourceMode.
func normalizeModes(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if m := sourceMode(info.Mode()); info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != m {
			return os.Chmod(p, m)
		}
		return nil
	})
}

// copyEntry copies one file, directory or symlink with its sourceMode.
func copyEntry(e plan.SourceEntry, dst string) error {
	switch {
	case e.Info.IsDir():
		if err := os.Mkdir(dst, 0o755); err != nil {
			return err
		}
		return os.Chmod(dst, sourceMode(e.Info.Mode()))
	case e.Info.Mode()&fs.ModeSymlink != 0:
		return os.Symlink(e.Target, dst)
	}
	in, err := e.Open()
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, in); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(sourceMode(e.Info.Mode())); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fetchGit clones src.Git into root, checks out src.Commit and drops .git.
func fetchGit(ctx context.Context, src *plan.Source, root string) error {
	git := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(buf.String()))
		}
		return nil
	}
	if err := git("clone", "--quiet", "--no-checkout", src.Git, root); err != nil {
		return fmt.Errorf("source %s: %w", src.Git, err)
	}
	if err := git("-C", root, "-c", "advice.detachedHead=false", "checkout", "--quiet", src.Commit); err != nil {
		return fmt.Errorf("source %s@%s: %w", src.Git, src.Commit, err)
	}
	return os.RemoveAll(filepath.Join(root, ".git"))
}
