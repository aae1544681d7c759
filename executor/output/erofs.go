package output

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/strata-build/strata/executor/tree"
)

func writeErofs(ctx context.Context, t *tree.Tree, c Contents, opts Options, dst string) (Result, error) {
	var comp []string
	switch opts.Compression {
	case "":
	case "lz4", "lz4hc":
		comp = []string{"-z" + opts.Compression}
	default:
		return Result{}, fmt.Errorf("%w: erofs compression %q (want \"\", lz4 or lz4hc)", ErrInvalidOptions, opts.Compression)
	}
	// mkfs.erofs takes owners and modes from the source inodes, so the staging copy
	// carries the manifest's. Without root only an all-root tree can be made, by
	// --all-root, which gives the same image as chowning to 0:0.
	root := os.Geteuid() == 0
	var owner []string
	if !root {
		for _, e := range t.Entries {
			if e.UID != 0 || e.GID != 0 {
				return Result{}, fmt.Errorf("%w: erofs: %q is owned by %d:%d and only root can stage other owners than 0:0",
					ErrUnsupported, e.Path, e.UID, e.GID)
			}
		}
		owner = []string{"--all-root"}
	}
	uuid, err := derivedUUID(t, opts, "erofs uuid")
	if err != nil {
		return Result{}, err
	}
	src, cleanSrc, err := stagedDir(ctx, t, c, opts, stageMode{meta: true, chown: root})
	if err != nil {
		return Result{}, err
	}
	defer cleanSrc()
	return writeWithTool(dst, func(tmp string) error {
		args := []string{"--quiet", "-x", "-1", "-T", strconv.FormatInt(opts.SourceDateEpoch, 10), "-U", uuid}
		args = append(args, comp...)
		args = append(args, owner...)
		args = append(args, tmp, src)
		_, err := runTool(ctx, nil, "mkfs.erofs", args...)
		return err
	})
}
