package output

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// mke2fsConf pins the ext4 feature set, so the host's /etc/mke2fs.conf cannot change
// the image. It is e2fsprogs 1.47's stock ext4 profile without orphan_file and
// metadata_csum_seed, which older kernels cannot mount read-write.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
		inode_size = 256
	}
`

const ext4BlockSize = 4096

// MaxExt4Size is the largest ext4 image Write makes (256 GiB). Partition and
// removable-media images are far smaller, a larger size is nearly always a
// unit mistake, and every build reads and hashes the whole image, holes
// included. Write also refuses a size beyond the free space of the
// destination's filesystem, where the image could never be filled.
const MaxExt4Size int64 = 256 << 30

// ext4Inodes is the inode count given to mkfs.ext4: the entries, the root,
// lost+found, the 10 reserved inodes, some slack and Options.InodesExtra.
func ext4Inodes(t *tree.Tree, opts Options) int { return len(t.Entries) + 32 + opts.InodesExtra }

// maxInodesExtra bounds Options.InodesExtra (ext4 allows 2^32 inodes; each
// takes 256 bytes of inode table in the image).
const maxInodesExtra = 1 << 30

// ext4AutoSize estimates the image size for t: data and directory blocks plus 10%,
// the inode table, the journal mkfs picks for that size and 4 MiB for group
// metadata, rounded up to a MiB.
func ext4AutoSize(t *tree.Tree, opts Options) int64 {
	const bs = ext4BlockSize
	blocks := int64(4) // lost+found
	dirBytes := map[string]int64{".": 24}
	for _, e := range t.Entries {
		dirBytes[path.Dir(e.Path)] += 8 + (int64(len(path.Base(e.Path)))+3)&^3
		switch e.Type {
		case tree.Dir:
			dirBytes[e.Path] += 24
		case tree.File:
			blocks += (e.Size+bs-1)/bs + e.Size/(64<<20)
		case tree.Symlink:
			if len(e.Target) >= 60 {
				blocks++
			}
		}
	}
	for _, n := range dirBytes {
		blocks += (n+bs-1)/bs + n/(8*bs)
	}
	total := blocks*bs + blocks*bs/10 + int64(ext4Inodes(t, opts))*256 + 4<<20
	total += ext4JournalBlocks(total/bs) * bs
	const mib = 1 << 20
	return (total + mib - 1) / mib * mib
}

// ext4JournalBlocks mirrors e2fsprogs' ext2fs_default_journal_size.
func ext4JournalBlocks(blocks int64) int64 {
	switch {
	case blocks < 2048:
		return 0
	case blocks < 32768:
		return 1024
	case blocks < 256*1024:
		return 4096
	case blocks < 512*1024:
		return 8192
	case blocks < 4096*1024:
		return 16384
	case blocks < 8192*1024:
		return 32768
	case blocks < 16384*1024:
		return 65536
	case blocks < 32768*1024:
		return 131072
	}
	return 262144
}

// debugfsName quotes a path for debugfs, which splits commands at white space
// and understands double quotes but no escapes.
func debugfsName(p string) (string, error) {
	if strings.ContainsAny(p, "\"\\\n\r") {
		return "", fmt.Errorf("%w: debugfs cannot name %q", ErrUnsupported, p)
	}
	return `"` + p + `"`, nil
}

// ext4Fixups returns debugfs commands that create the device nodes and fifos
// (the source directory never holds them, so that staging needs no root) and
// then set every inode's owner, mode and times from the manifest: mkfs.ext4 -d
// copies them from the source directory's inodes.
func ext4Fixups(t *tree.Tree, epoch int64) ([]byte, error) {
	var b bytes.Buffer
	for _, e := range t.Entries {
		if !e.Type.IsDevice() {
			continue
		}
		// debugfs's mknod takes a name in the current directory: a path would
		// become one entry named with slashes.
		dir, err := debugfsName("/" + path.Dir(e.Path))
		if err != nil {
			return nil, err
		}
		base, err := debugfsName(path.Base(e.Path))
		if err != nil {
			return nil, err
		}
		name, _ := debugfsName("/" + e.Path)
		switch e.Type {
		case tree.CharDev, tree.BlockDev:
			// debugfs's mknod refuses numbers past 65535, so the numbers are set
			// afterwards, encoded as the kernel does: the old 16-bit form in
			// i_block[0] when both fit in a byte, the new 32-bit one in i_block[1].
			typ := "c"
			if e.Type == tree.BlockDev {
				typ = "b"
			}
			var old, huge uint32
			if e.Major < 256 && e.Minor < 256 {
				old = e.Major<<8 | e.Minor
			} else {
				huge = e.Minor&0xff | e.Major<<8 | (e.Minor&^0xff)<<12
			}
			fmt.Fprintf(&b, "cd %s\nmknod %s %s 0 0\nsif %s block[0] %d\nsif %s block[1] %d\n", dir, base, typ, name, old, name, huge)
		case tree.Fifo:
			fmt.Fprintf(&b, "cd %s\nmknod %s p\n", dir, base)
		}
	}
	b.WriteString("cd /\n")
	at := "@" + strconv.FormatInt(epoch, 10)
	set := func(name string, uid, gid int, mode uint32) {
		fmt.Fprintf(&b, "sif %s uid %d\nsif %s gid %d\nsif %s mode 0%o\n", name, uid, name, gid, name, mode)
		for _, f := range []string{"atime", "mtime", "ctime", "crtime"} {
			fmt.Fprintf(&b, "sif %s %s %s\n", name, f, at)
		}
	}
	set("/", 0, 0, 0o40755)
	set("/lost+found", 0, 0, 0o40700)
	for _, e := range t.Entries {
		name, err := debugfsName("/" + e.Path)
		if err != nil {
			return nil, err
		}
		mode := e.Mode
		switch e.Type {
		case tree.Dir:
			mode |= 0o40000
		case tree.File:
			mode |= 0o100000
		case tree.Symlink:
			mode = 0o120777
		case tree.CharDev:
			mode |= 0o20000
		case tree.BlockDev:
			mode |= 0o60000
		case tree.Fifo:
			mode |= 0o10000
		}
		set(name, e.UID, e.GID, mode)
	}
	return b.Bytes(), nil
}

func writeExt4(ctx context.Context, t *tree.Tree, c Contents, opts Options, dst string) (Result, error) {
	size := opts.Size
	if size < 0 || size%ext4BlockSize != 0 {
		return Result{}, fmt.Errorf("%w: ext4 size %d is not a positive multiple of %d", ErrInvalidOptions, size, ext4BlockSize)
	}
	if err := checkExt4Size(size, dst); err != nil {
		return Result{}, err
	}
	if len(opts.Label) > 16 {
		return Result{}, fmt.Errorf("%w: ext4 label %q is longer than 16 bytes", ErrInvalidOptions, opts.Label)
	}
	if opts.InodesExtra < 0 || opts.InodesExtra > maxInodesExtra {
		return Result{}, fmt.Errorf("%w: ext4 inodes_extra %d is not between 0 and %d", ErrInvalidOptions, opts.InodesExtra, maxInodesExtra)
	}
	// mkfs.ext4 merges a source lost+found into the one it makes, and the fixups
	// then give it the manifest's mode and owner; anything but a directory there
	// would leave e2fsck without one.
	if e, ok := t.Lookup("lost+found"); ok && e.Type != tree.Dir {
		return Result{}, fmt.Errorf("%w: ext4: /lost+found is a %s, and an ext4 filesystem needs it to be a directory", ErrUnsupported, e.Type)
	}
	auto := size == 0
	if auto {
		size = ext4AutoSize(t, opts)
	}
	uuid, err := derivedUUID(t, opts, "ext4 uuid")
	if err != nil {
		return Result{}, err
	}
	seed, err := derivedUUID(t, opts, "ext4 hash seed")
	if err != nil {
		return Result{}, err
	}
	fixups, err := ext4Fixups(t, opts.SourceDateEpoch)
	if err != nil {
		return Result{}, err
	}
	work, cleanup, err := workDir(opts, "strata-ext4-*")
	if err != nil {
		return Result{}, err
	}
	defer cleanup()
	conf := filepath.Join(work, "mke2fs.conf")
	cmds := filepath.Join(work, "debugfs.cmds")
	if err := os.WriteFile(conf, []byte(mke2fsConf), 0o600); err != nil {
		return Result{}, err
	}
	if err := os.WriteFile(cmds, fixups, 0o600); err != nil {
		return Result{}, err
	}
	src, cleanSrc, err := sourceDir(ctx, t, c, opts, false)
	if err != nil {
		return Result{}, err
	}
	defer cleanSrc()
	// E2FSPROGS_FAKE_TIME fixes the times e2fsprogs stamps (superblock, journal and
	// resize inodes). e2fsprogs reads a fake time of 0 as unset and uses the clock,
	// so epoch 0 stamps those at 1; every file's times are set by debugfs exactly.
	fake := opts.SourceDateEpoch
	if fake == 0 {
		fake = 1
	}
	env := []string{"MKE2FS_CONFIG=" + conf, "E2FSPROGS_FAKE_TIME=" + strconv.FormatInt(fake, 10)}
	return writeWithTool(dst, func(tmp string) error {
		for attempt := 0; ; attempt++ {
			err := mkfsExt4(ctx, env, tmp, size, src, uuid, seed, ext4Inodes(t, opts), opts.Label)
			if err == nil {
				break
			}
			if !auto || attempt == 4 || !isNoSpace(err) {
				return err
			}
			size = (size + size/2 + (1<<20 - 1)) / (1 << 20) * (1 << 20)
			if err := checkExt4Size(size, dst); err != nil {
				return err
			}
		}
		if err := debugfsFix(ctx, env, tmp, cmds); err != nil {
			return err
		}
		return digHoles(ctx, tmp)
	})
}

// checkExt4Size refuses an image larger than MaxExt4Size or than the free
// space of dst's filesystem.
func checkExt4Size(size int64, dst string) error {
	if size > MaxExt4Size {
		return fmt.Errorf("%w: ext4 size %s is larger than the %s an image may have", ErrTooLarge, formatBytes(size), formatBytes(MaxExt4Size))
	}
	var st unix.Statfs_t
	dir := filepath.Dir(dst)
	if err := unix.Statfs(dir, &st); err != nil {
		return &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	if free := int64(st.Bavail) * st.Bsize; size > free {
		return fmt.Errorf("%w: ext4 size %s is larger than the %s free on the filesystem of %s", ErrTooLarge, formatBytes(size), formatBytes(free), dir)
	}
	return nil
}

// digHoles deallocates the blocks of the file p that read as zeros: written
// zeros (inode tables) and the zeroed ranges mkfs.ext4 allocates without
// writing (the journal), which SEEK_DATA reports as holes. An image of a large
// size and a small tree then takes the space of the tree. Filesystems that
// cannot punch holes keep the blocks; the contents are the same either way.
func digHoles(ctx context.Context, p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	fd := int(f.Fd())
	punch := func(off, n int64) error {
		if n <= 0 {
			return nil
		}
		err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("punch hole in %s: %w", p, err)
		}
		return nil
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return punch(off, fi.Size()-off) // no data past off
		}
		if err != nil {
			return fmt.Errorf("seek data in %s: %w", p, err)
		}
		if err := punch(off, data-off); err != nil {
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole in %s: %w", p, err)
		}
		for pos := data; pos < hole; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := int(min(int64(len(buf)), hole-pos))
			if _, err := f.ReadAt(buf[:n], pos); err != nil {
				return err
			}
			for i := 0; i+ext4BlockSize <= n; {
				j := i
				for j+ext4BlockSize <= n && isZero(buf[j:j+ext4BlockSize]) {
					j += ext4BlockSize
				}
				if j > i {
					if err := punch(pos+int64(i), int64(j-i)); err != nil {
						return err
					}
					i = j
				} else {
					i += ext4BlockSize
				}
			}
			pos += int64(n)
		}
		off = hole
	}
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// formatBytes formats n in the largest binary unit that keeps one decimal.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}

func isNoSpace(err error) bool {
	var te *ToolError
	if !errors.As(err, &te) {
		return false
	}
	s := strings.ToLower(te.Stderr)
	return strings.Contains(s, "could not allocate") || strings.Contains(s, "no space left") ||
		strings.Contains(s, "not enough space") || strings.Contains(s, "too small")
}

// mkfsExt4 makes an ext4 filesystem of size bytes in the file img from dir src.
func mkfsExt4(ctx context.Context, env []string, img string, size int64, src, uuid, seed string, inodes int, label string) error {
	if err := os.Truncate(img, 0); err != nil {
		return err
	}
	if err := os.Truncate(img, size); err != nil {
		return err
	}
	args := []string{"-q", "-F", "-t", "ext4", "-T", "default",
		"-b", strconv.Itoa(ext4BlockSize), "-I", "256", "-m", "0", "-N", strconv.Itoa(inodes),
		"-U", uuid,
		"-E", "hash_seed=" + seed + ",lazy_itable_init=0,lazy_journal_init=0,nodiscard,no_copy_xattrs,root_owner=0:0",
		"-d", src}
	if label != "" {
		args = append(args, "-L", label)
	}
	args = append(args, img)
	_, err := runTool(ctx, env, "mkfs.ext4", args...)
	return err
}

// debugfsFix runs the fixup commands. debugfs exits 0 even when a command fails,
// so any stderr line other than its version banner is an error.
func debugfsFix(ctx context.Context, env []string, img, cmds string) error {
	stderr, err := runTool(ctx, env, "debugfs", "-w", "-f", cmds, img)
	if err != nil {
		return err
	}
	var bad []string
	for _, l := range strings.Split(strings.TrimSpace(string(stderr)), "\n") {
		if l != "" && !strings.HasPrefix(l, "debugfs ") {
			bad = append(bad, l)
		}
	}
	if len(bad) > 0 {
		return &ToolError{Tool: "debugfs", Err: errors.New("fixing owners, modes and times failed"), Stderr: tail([]byte(strings.Join(bad, "\n")))}
	}
	return nil
}
