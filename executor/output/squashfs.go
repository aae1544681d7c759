package output

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/strata-build/strata/executor/tree"
)

// squashfsCompressors are the compressors mksquashfs 4.5 knows.
var squashfsCompressors = map[string]bool{"gzip": true, "lzo": true, "lz4": true, "xz": true, "zstd": true, "lzma": true}

// pseudoName escapes a path for a mksquashfs pseudo file, where names end at white
// space and a backslash escapes the next character.
func pseudoName(p string) (string, error) {
	if strings.ContainsAny(p, "\n\r") {
		return "", fmt.Errorf("%w: squashfs pseudo files cannot name %q", ErrUnsupported, p)
	}
	var b strings.Builder
	for _, r := range p {
		switch r {
		case ' ', '\t', '\\', '"', '\'':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String(), nil
}

// squashfsPseudo returns pseudo file definitions that set every entry's mode and
// owner ("path m mode uid gid"), overriding the source directory's inodes, and
// create the device nodes ("path c|b mode uid gid major minor") and fifos
// ("path i mode uid gid f"), which the source directory does not hold.
func squashfsPseudo(t *tree.Tree) ([]byte, error) {
	var b strings.Builder
	for _, e := range t.Entries {
		name, err := pseudoName(e.Path)
		if err != nil {
			return nil, err
		}
		mode := formatOctal(e.Mode)
		switch e.Type {
		case tree.CharDev:
			fmt.Fprintf(&b, "%s c %s %d %d %d %d\n", name, mode, e.UID, e.GID, e.Major, e.Minor)
		case tree.BlockDev:
			fmt.Fprintf(&b, "%s b %s %d %d %d %d\n", name, mode, e.UID, e.GID, e.Major, e.Minor)
		case tree.Fifo:
			fmt.Fprintf(&b, "%s i %s %d %d f\n", name, mode, e.UID, e.GID)
		default:
			fmt.Fprintf(&b, "%s m %s %d %d\n", name, mode, e.UID, e.GID)
		}
	}
	return []byte(b.String()), nil
}

func writeSquashfs(ctx context.Context, t *tree.Tree, c Contents, opts Options, dst string) (Result, error) {
	comp := opts.Compression
	if comp == "" {
		comp = "zstd"
	}
	if !squashfsCompressors[comp] {
		return Result{}, fmt.Errorf("%w: squashfs compression %q", ErrInvalidOptions, comp)
	}
	pseudo, err := squashfsPseudo(t)
	if err != nil {
		return Result{}, err
	}
	work, cleanup, err := workDir(opts, "strata-squashfs-*")
	if err != nil {
		return Result{}, err
	}
	defer cleanup()
	pf := filepath.Join(work, "pseudo")
	if err := os.WriteFile(pf, pseudo, 0o600); err != nil {
		return Result{}, err
	}
	src, cleanSrc, err := sourceDir(ctx, t, c, opts, true)
	if err != nil {
		return Result{}, err
	}
	defer cleanSrc()
	epoch := strconv.FormatInt(opts.SourceDateEpoch, 10)
	return writeWithTool(dst, func(tmp string) error {
		_, err := runTool(ctx, nil, "mksquashfs", src, tmp,
			"-noappend", "-quiet", "-no-progress",
			"-reproducible", "-no-xattrs", "-no-hardlinks",
			"-all-time", epoch, "-mkfs-time", epoch,
			"-root-mode", "755", "-root-uid", "0", "-root-gid", "0",
			"-comp", comp, "-b", "131072",
			"-pf", pf)
		return err
	})
}
