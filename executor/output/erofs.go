package output

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/strata-build/strata/executor/tree"
)

func writeErofs(ctx context.Context, t *tree.Tree, c Contents, opts Options, dst string) (Result, error) {
	var comp []string
	switch opts.Compression {
	case "", "none":
	case "lz4", "lz4hc":
		comp = []string{"-z" + opts.Compression}
	default:
		return Result{}, fmt.Errorf("%w: erofs compression %q (want none, lz4 or lz4hc)", ErrInvalidOptions, opts.Compression)
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
			if e.Type == tree.CharDev || e.Type == tree.BlockDev {
				return Result{}, fmt.Errorf("%w: erofs: %q is a device node and only root can stage one for mkfs.erofs",
					ErrUnsupported, e.Path)
			}
		}
		owner = []string{"--all-root"}
	}
	for _, e := range t.Entries {
		// mkfs.erofs 1.5 fails with ENOENT on a name of NAME_MAX bytes.
		if len(path.Base(e.Path)) >= 255 {
			return Result{}, fmt.Errorf("%w: erofs: mkfs.erofs cannot write names of 255 bytes such as %q", ErrUnsupported, e.Path)
		}
	}
	renames, err := erofsPlaceholders(t)
	if err != nil {
		return Result{}, err
	}
	uuid, err := derivedUUID(t, opts, "erofs uuid")
	if err != nil {
		return Result{}, err
	}
	src, cleanSrc, err := stagedDir(ctx, t, c, opts, stageMode{meta: true, chown: root, devices: true, rename: renames.staged})
	if err != nil {
		return Result{}, err
	}
	defer cleanSrc()
	return writeWithTool(dst, func(tmp string) error {
		args := []string{"--quiet", "-x", "-1", "-T", strconv.FormatInt(opts.SourceDateEpoch, 10), "-U", uuid}
		args = append(args, comp...)
		args = append(args, owner...)
		args = append(args, tmp, src)
		if _, err := runTool(ctx, nil, "mkfs.erofs", args...); err != nil {
			return err
		}
		return renames.restore(tmp)
	})
}

// erofsLostFound is the prefix mkfs.erofs 1.5 skips: it compares every name
// with strncmp(name, "lost+found", 10), so "/var/lost+foundling" and everything
// under "/srv/lost+found" silently vanish from the image.
const erofsLostFound = "lost+found"

// erofsRenames works around that: such entries are staged under a placeholder
// name of the same length that sorts at the same place among its siblings
// (byte 9, 'd', becomes 'c'), and the placeholders are then overwritten with
// the real names in the image's directory blocks. Equal lengths keep every
// offset; the same order keeps erofs's sorted directories (which readers
// binary-search) valid.
type erofsRenames struct {
	// byPath maps a tree path to its staged path, for the entries that differ.
	byPath map[string]string
	// dirs maps a staged directory path ("" for the root) to the placeholder
	// names in it and the names they stand for.
	dirs map[string]map[string]string
}

func erofsPlaceholder(name string) string {
	return name[:len(erofsLostFound)-1] + "c" + name[len(erofsLostFound):]
}

// erofsPlaceholders plans the renames for t. It fails with ErrUnsupported when
// a sibling would sort between a placeholder and its name, which only a name
// starting with "lost+founc" can.
func erofsPlaceholders(t *tree.Tree) (erofsRenames, error) {
	r := erofsRenames{byPath: map[string]string{}, dirs: map[string]map[string]string{}}
	children := map[string][]string{}
	for _, e := range t.Entries {
		dir, base := path.Split(e.Path)
		children[strings.TrimSuffix(dir, "/")] = append(children[strings.TrimSuffix(dir, "/")], base)
	}
	for _, e := range t.Entries {
		dir, base := path.Split(e.Path)
		dir = strings.TrimSuffix(dir, "/")
		sdir := r.staged(dir)
		if !strings.HasPrefix(base, erofsLostFound) {
			if sdir != dir {
				r.byPath[e.Path] = path.Join(sdir, base)
			}
			continue
		}
		ph := erofsPlaceholder(base)
		for _, sib := range children[dir] {
			if !strings.HasPrefix(sib, erofsLostFound) && ph <= sib && sib < base {
				return erofsRenames{}, fmt.Errorf("%w: erofs: mkfs.erofs drops names starting with %q, and %q next to %q prevents working around it",
					ErrUnsupported, erofsLostFound, path.Join(dir, sib), e.Path)
			}
		}
		r.byPath[e.Path] = path.Join(sdir, ph)
		if r.dirs[sdir] == nil {
			r.dirs[sdir] = map[string]string{}
		}
		r.dirs[sdir][ph] = base
	}
	return r, nil
}

// staged returns the path a tree path is staged at.
func (r erofsRenames) staged(p string) string {
	if s, ok := r.byPath[p]; ok {
		return s
	}
	return p
}

// restore writes the real names over the placeholders in the image img.
func (r erofsRenames) restore(img string) error {
	if len(r.dirs) == 0 {
		return nil
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	im, err := openErofs(f)
	if err != nil {
		return err
	}
	// Find every name first, by staged paths, then overwrite them.
	type patch struct {
		off  int64
		name string
	}
	var patches []patch
	dirs := make([]string, 0, len(r.dirs))
	for d := range r.dirs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		nid, err := im.lookup(d)
		if err != nil {
			return err
		}
		ents, err := im.readDir(nid)
		if err != nil {
			return fmt.Errorf("erofs directory /%s: %w", d, err)
		}
		found := 0
		for _, de := range ents {
			if real, ok := r.dirs[d][de.name]; ok {
				patches = append(patches, patch{de.nameOff, real})
				found++
			}
		}
		if found != len(r.dirs[d]) {
			return fmt.Errorf("erofs directory /%s: %d of %d placeholder names found", d, found, len(r.dirs[d]))
		}
	}
	// The superblock checksum covers the rest of block 0, where the root
	// directory's inline names may sit: check the old one before patching so a
	// format we misread is an error, never a corrupt image.
	if im.sbChecksum {
		if sum, err := im.superblockCRC(); err != nil {
			return err
		} else if sum != im.sbSaved {
			return fmt.Errorf("%w: superblock checksum %08x, computed %08x", errErofsFormat, im.sbSaved, sum)
		}
	}
	for _, p := range patches {
		if _, err := f.WriteAt([]byte(p.name), p.off); err != nil {
			return err
		}
	}
	if im.sbChecksum {
		sum, err := im.superblockCRC()
		if err != nil {
			return err
		}
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], sum)
		if _, err := f.WriteAt(b[:], erofsSuperOffset+4); err != nil {
			return err
		}
	}
	return f.Sync()
}

// superblockCRC computes the superblock checksum as the kernel does:
// crc32c(~0, block 0 from the superblock on, checksum field zeroed), without
// the final inversion Go's crc32 applies.
func (im *erofsImage) superblockCRC() (uint32, error) {
	b := make([]byte, im.blkSize-erofsSuperOffset)
	if _, err := im.f.ReadAt(b, erofsSuperOffset); err != nil {
		return 0, err
	}
	clear(b[4:8])
	return ^crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)), nil
}

// erofsImage reads the parts of an uncompressed-metadata erofs image that
// directories need (the on-disk format of linux/fs/erofs/erofs_fs.h).
type erofsImage struct {
	f       *os.File
	blkSize int64
	meta    int64 // byte offset of the metadata area
	rootNID uint64
	// sbChecksum is set when the superblock carries a checksum, sbSaved.
	sbChecksum bool
	sbSaved    uint32
}

const erofsSuperOffset = 1024

var errErofsFormat = errors.New("unexpected erofs image layout")

func openErofs(f *os.File) (*erofsImage, error) {
	var sb [128]byte
	if _, err := f.ReadAt(sb[:], erofsSuperOffset); err != nil {
		return nil, fmt.Errorf("erofs superblock: %w", err)
	}
	if binary.LittleEndian.Uint32(sb[0:]) != 0xE0F5E1E2 {
		return nil, fmt.Errorf("%w: bad superblock magic", errErofsFormat)
	}
	bits := sb[12]
	if bits < 9 || bits > 16 {
		return nil, fmt.Errorf("%w: block size 2^%d", errErofsFormat, bits)
	}
	bs := int64(1) << bits
	const featureSBChecksum = 1
	return &erofsImage{
		f:          f,
		blkSize:    bs,
		meta:       int64(binary.LittleEndian.Uint32(sb[40:])) * bs,
		rootNID:    uint64(binary.LittleEndian.Uint16(sb[14:])),
		sbChecksum: binary.LittleEndian.Uint32(sb[8:])&featureSBChecksum != 0,
		sbSaved:    binary.LittleEndian.Uint32(sb[4:]),
	}, nil
}

// erofsInode is what directory reading needs of an inode.
type erofsInode struct {
	mode    uint16
	layout  int
	size    int64
	blkAddr int64
	inline  int64 // byte offset just past the inode and its xattrs
}

func (im *erofsImage) inode(nid uint64) (erofsInode, error) {
	off := im.meta + int64(nid)*32
	var b [64]byte
	if _, err := im.f.ReadAt(b[:32], off); err != nil {
		return erofsInode{}, err
	}
	format := binary.LittleEndian.Uint16(b[0:])
	in := erofsInode{
		mode:    binary.LittleEndian.Uint16(b[4:]),
		layout:  int(format>>1) & 7,
		blkAddr: int64(binary.LittleEndian.Uint32(b[16:])),
	}
	isize := int64(32)
	if format&1 == 1 { // extended inode
		if _, err := im.f.ReadAt(b[:], off); err != nil {
			return erofsInode{}, err
		}
		isize = 64
		in.size = int64(binary.LittleEndian.Uint64(b[8:]))
	} else {
		in.size = int64(binary.LittleEndian.Uint32(b[8:]))
	}
	xsize := int64(0)
	if ic := int64(binary.LittleEndian.Uint16(b[2:])); ic > 0 {
		xsize = 12 + (ic-1)*4
	}
	in.inline = off + isize + xsize
	return in, nil
}

// erofsDirent is one directory entry with the file offset of its name.
type erofsDirent struct {
	name    string
	nid     uint64
	nameOff int64
}

// readDir lists the directory nid: flat data blocks, the last one possibly
// inline after the inode, each holding 12-byte dirents and then their names.
func (im *erofsImage) readDir(nid uint64) ([]erofsDirent, error) {
	in, err := im.inode(nid)
	if err != nil {
		return nil, err
	}
	if in.mode&0o170000 != 0o040000 {
		return nil, fmt.Errorf("%w: inode %d is not a directory", errErofsFormat, nid)
	}
	const flatPlain, flatInline = 0, 2
	if in.layout != flatPlain && in.layout != flatInline {
		return nil, fmt.Errorf("%w: directory layout %d", errErofsFormat, in.layout)
	}
	var out []erofsDirent
	for pos := int64(0); pos < in.size; pos += im.blkSize {
		n := min(im.blkSize, in.size-pos)
		off := in.blkAddr*im.blkSize + pos
		if in.layout == flatInline && pos+im.blkSize > in.size {
			off = in.inline
		}
		blk := make([]byte, n)
		if _, err := im.f.ReadAt(blk, off); err != nil {
			return nil, err
		}
		if n < 12 {
			return nil, fmt.Errorf("%w: short directory block", errErofsFormat)
		}
		count := int64(binary.LittleEndian.Uint16(blk[8:])) / 12
		if count == 0 || count*12 > n {
			return nil, fmt.Errorf("%w: directory block with %d entries", errErofsFormat, count)
		}
		for i := int64(0); i < count; i++ {
			d := blk[i*12:]
			start := int64(binary.LittleEndian.Uint16(d[8:]))
			end := n
			if i+1 < count {
				end = int64(binary.LittleEndian.Uint16(blk[(i+1)*12+8:]))
			}
			if start < count*12 || end < start || end > n {
				return nil, fmt.Errorf("%w: directory name offsets", errErofsFormat)
			}
			name := blk[start:end]
			if i+1 == count {
				if z := strings.IndexByte(string(name), 0); z >= 0 {
					name = name[:z]
				}
			}
			out = append(out, erofsDirent{name: string(name), nid: binary.LittleEndian.Uint64(d[0:]), nameOff: off + start})
		}
	}
	return out, nil
}

// lookup returns the nid of the directory at the slash-separated path p
// ("" for the root).
func (im *erofsImage) lookup(p string) (uint64, error) {
	nid := im.rootNID
	if p == "" {
		return nid, nil
	}
	for _, name := range strings.Split(p, "/") {
		ents, err := im.readDir(nid)
		if err != nil {
			return 0, fmt.Errorf("erofs lookup /%s: %w", p, err)
		}
		found := false
		for _, de := range ents {
			if de.name == name {
				nid, found = de.nid, true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("erofs lookup /%s: %w: %q not found", p, errErofsFormat, name)
		}
	}
	return nid, nil
}
