package builtin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/strata-build/strata/executor/tree"
)

// copyOptions are the options of strata.copy:
//
//	{"input": "name", "src": "/", "dst": "/", "owner": "0:0", "mode": 420}
//
// input is required; src (a path inside the input) and dst (a tree path)
// default to "/". A directory src is merged into the directory dst (like
// "cp -a src/. dst/"); a file or symbolic link src is copied to the path dst.
// When the input itself is a file, src must be "/".
//
// owner ("uid:gid") and mode (permission bits, at most 07777) are applied to
// every entry copied, directories and files alike, as Dockerfile's COPY
// --chown and --chmod do (symbolic links take the owner only); when absent,
// each entry keeps the input's. The tree root keeps its own when dst is "/".
// An owner asked for here must be settable, like the owners of strata.files.
type copyOptions struct {
	Input string  `json:"input"`
	Src   string  `json:"src"`
	Dst   string  `json:"dst"`
	Owner *string `json:"owner"`
	Mode  *uint32 `json:"mode"`
}

// parseOwner parses a "uid:gid" option.
func parseOwner(field, s string) (owner, error) {
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.ParseUint(u, 10, 32)
	gid, err2 := strconv.ParseUint(g, 10, 32)
	if !ok || err1 != nil || err2 != nil || uid > maxID || gid > maxID {
		return owner{}, fmt.Errorf("%s: %q is not \"uid:gid\" with numeric ids", field, s)
	}
	return owner{int(uid), int(gid), true}, nil
}

func runCopy(ctx context.Context, options []byte, env Env) error {
	var o copyOptions
	if err := decode(options, &o); err != nil {
		return err
	}
	if o.Src == "" {
		o.Src = "/"
	}
	if o.Dst == "" {
		o.Dst = "/"
	}
	inPath, err := input(env, "input", o.Input)
	if err != nil {
		return err
	}
	srcRel, err := treePath("src", o.Src)
	if err != nil {
		return err
	}
	dstRel, err := treePath("dst", o.Dst)
	if err != nil {
		return err
	}
	var c copier
	if o.Owner != nil {
		own, err := parseOwner("owner", *o.Owner)
		if err != nil {
			return err
		}
		c.owner = &own
	}
	if o.Mode != nil {
		if *o.Mode > 0o7777 {
			return fmt.Errorf("mode: %#o is not a permission mode (at most 07777)", *o.Mode)
		}
		c.mode = o.Mode
	}
	t, err := openTree(env)
	if err != nil {
		return fmt.Errorf("open tree: %w", err)
	}
	defer t.Close()

	fi, err := os.Stat(inPath)
	if err != nil {
		return fmt.Errorf("input %q: %w", o.Input, err)
	}
	if !fi.IsDir() {
		if srcRel != "." {
			return fmt.Errorf("src: input %q is a file, so src must be \"/\" (got %q)", o.Input, o.Src)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("input %q: not a regular file or directory", o.Input)
		}
		if dstRel == "." {
			return errors.New("dst: the input is a file, so dst must name the destination file (got \"/\")")
		}
		f, err := os.Open(inPath)
		if err != nil {
			return fmt.Errorf("input %q: %w", o.Input, err)
		}
		defer f.Close()
		full, err := t.locate(dstRel, true)
		if err != nil {
			return fmt.Errorf("dst: %w", err)
		}
		if err := t.clearForFile(full); err != nil {
			return fmt.Errorf("dst: %w", err)
		}
		c.single = fileOwner(env.InputManifests[o.Input])
		return t.writeFile(full, f, c.modeOf(fi), c.ownerOf(".", fi))
	}

	in, err := openFsys(inPath)
	if err != nil {
		return fmt.Errorf("input %q: %w", o.Input, err)
	}
	defer in.Close()
	in.man = env.InputManifests[o.Input]
	src := "."
	if srcRel != "." {
		src, err = in.locate(srcRel, false)
	}
	var sfi fs.FileInfo
	if err == nil {
		sfi, err = in.root.Lstat(src)
	}
	if errors.Is(err, fs.ErrNotExist) {
		// os.Root's words name its call ("statat etc: no such file"), and a
		// link on the way that leads out of the input (etc -> /etc) is why
		// as often as a typo.
		return fmt.Errorf("src: /%s is not in input %q (a link on its way is followed only within the input)", strings.TrimPrefix(srcRel, "./"), o.Input)
	}
	if err != nil {
		return fmt.Errorf("src: input %q: %w", o.Input, err)
	}
	c.ctx, c.in, c.out, c.input = ctx, in, t, o.Input
	if sfi.IsDir() {
		dst, err := t.resolveDir(dstRel, true)
		if err != nil {
			return fmt.Errorf("dst: %w", err)
		}
		if err := c.dir(src, dst); err != nil {
			return err
		}
		if dstRel == "." {
			// The tree root keeps its own mode and owner.
			return nil
		}
		return t.setAttrs(dst, c.modeOf(sfi), c.ownerOf(src, sfi))
	}
	if dstRel == "." {
		return fmt.Errorf("dst: src %q is not a directory, so dst must name the destination (got \"/\")", o.Src)
	}
	full, err := t.locate(dstRel, true)
	if err != nil {
		return fmt.Errorf("dst: %w", err)
	}
	return c.entry(src, full, sfi)
}

// fileOwner is the owner of a single-file input: its manifest's only file.
func fileOwner(m *tree.Tree) *owner {
	if m == nil {
		return nil
	}
	for _, e := range m.Entries {
		if e.Type == tree.File {
			return &owner{e.UID, e.GID, false}
		}
	}
	return nil
}

// clearForFile removes a non-directory at full; a directory is an error.
func (t *fsys) clearForFile(full string) error {
	isDir, err := t.clear(full)
	if err != nil {
		return err
	}
	if isDir {
		return fmt.Errorf("%s is a directory", show(full))
	}
	return nil
}

type copier struct {
	ctx   context.Context
	in    *fsys
	out   *fsys
	input string
	// owner and mode, when set, replace every copied entry's.
	owner *owner
	mode  *uint32
	// single is the owner of a single-file input, from its manifest.
	single *owner
}

// ownerOf is the owner the copy of the input entry src gets: the option's,
// else the input's (from its manifest: a sandbox without root shows every
// file as root's).
func (c *copier) ownerOf(src string, fi fs.FileInfo) owner {
	switch {
	case c.owner != nil:
		return *c.owner
	case c.single != nil:
		return *c.single
	case c.in != nil:
		return c.in.ownerOf(src, fi)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return rootOwner
	}
	return owner{int(st.Uid), int(st.Gid), false}
}

func (c *copier) modeOf(fi fs.FileInfo) uint32 {
	if c.mode != nil {
		return *c.mode
	}
	return unixMode(fi.Mode())
}

// dir copies the children of the input directory src into the existing,
// resolved tree directory dst, in sorted order.
func (c *copier) dir(src, dst string) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	d, err := c.in.root.Open(src)
	if err != nil {
		return fmt.Errorf("input %q: %w", c.input, err)
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return fmt.Errorf("input %q: read %s: %w", c.input, show(src), err)
	}
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("input %q: %w", c.input, err)
		}
		if err := c.entry(joinRel(src, e.Name()), joinRel(dst, e.Name()), fi); err != nil {
			return err
		}
	}
	return nil
}

// entry copies one input entry (described by fi, never followed) to the tree
// path full, whose parent is resolved.
func (c *copier) entry(src, full string, fi fs.FileInfo) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := c.in.root.Readlink(src)
		if err != nil {
			return fmt.Errorf("input %q: %w", c.input, err)
		}
		if err := c.out.clearForFile(full); err != nil {
			return err
		}
		if err := c.out.root.Symlink(target, full); err != nil {
			return fmt.Errorf("symlink %s: %w", show(full), err)
		}
		// A symbolic link's owner is kept where permitted, never required:
		// without root it could not be recorded (no user xattrs on links).
		own := c.ownerOf(src, fi)
		own.strict = false
		return c.out.lchown(full, own)
	case fi.Mode().IsRegular():
		f, err := c.in.root.Open(src)
		if err != nil {
			return fmt.Errorf("input %q: %w", c.input, err)
		}
		defer f.Close()
		if err := c.out.clearForFile(full); err != nil {
			return err
		}
		return c.out.writeFile(full, f, c.modeOf(fi), c.ownerOf(src, fi))
	case fi.IsDir():
		dfi, err := c.out.root.Lstat(full)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := c.out.root.Mkdir(full, 0o700); err != nil {
				return fmt.Errorf("mkdir %s: %w", show(full), err)
			}
		case err != nil:
			return err
		case dfi.Mode()&fs.ModeSymlink != 0:
			// Merge into a directory reached through a symbolic link (such
			// as /bin -> usr/bin), keeping the link and the target's mode.
			if rdir, err := c.out.resolveDir(full, false); err == nil {
				return c.dir(src, rdir)
			}
			if err := c.out.root.Remove(full); err != nil {
				return err
			}
			if err := c.out.root.Mkdir(full, 0o700); err != nil {
				return fmt.Errorf("mkdir %s: %w", show(full), err)
			}
		case !dfi.IsDir():
			if err := c.out.root.Remove(full); err != nil {
				return err
			}
			if err := c.out.root.Mkdir(full, 0o700); err != nil {
				return fmt.Errorf("mkdir %s: %w", show(full), err)
			}
		}
		if err := c.dir(src, full); err != nil {
			return err
		}
		return c.out.setAttrs(full, c.modeOf(fi), c.ownerOf(src, fi))
	default:
		return fmt.Errorf("input %q: %s: unsupported file type %s (devices, fifos and sockets are not copied)", c.input, show(src), fi.Mode().Type())
	}
}
