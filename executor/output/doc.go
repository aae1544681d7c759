// Package output assembles a stored tree (a tree.Tree manifest plus its file
// contents) into the artifacts a plan asks for, reproducibly: equal manifests and
// options give byte-identical artifacts on any host.
//
// # Reproducibility
//
// Every format takes all metadata from the manifest, never from the inodes of a
// checkout or staging directory: entries are written in manifest (path) order,
// owners and permission bits (including setuid, setgid and sticky) are the
// manifest's, every timestamp is Options.SourceDateEpoch, there are no owner names,
// no extended attributes and no hardlinks (the manifest has none; files with equal
// contents stay separate files). The root directory, which the manifest does not
// describe, is 0755 owned by 0:0. Filesystem UUIDs and hash seeds are derived
// from the tree digest, the format, the epoch and Options.Name. External tools run
// with a fixed environment (PATH and LC_ALL=C only), so host settings cannot leak in.
// Output depends on the versions of the tools and of the compressors (Go's
// compress/gzip, klauspost/compress/zstd, mksquashfs, e2fsprogs, erofs-utils);
// the versions the tests were run with are squashfs-tools 4.5.1, e2fsprogs 1.47.0
// and erofs-utils 1.5.
//
// # Formats and media types
//
// The registry layer publishes artifacts under these media types:
//
//	format    media type                                 artifact
//	tree      application/vnd.strata.tree.v1+json        canonical manifest bytes (tree.Encode); the digest is the tree digest
//	tar       application/vnd.strata.tar                 PAX tar, no root entry, directories as "path/"
//	tar.zst   application/vnd.strata.tar+zstd            the same tar stream, one zstd frame with checksum
//	squashfs  application/vnd.strata.squashfs            mksquashfs image, zstd, 128 KiB blocks
//	ext4      application/vnd.strata.ext4                mkfs.ext4 image with a journal, 4 KiB blocks
//	erofs     application/vnd.strata.erofs               mkfs.erofs image, uncompressed by default
//	oci       application/vnd.oci.image.manifest.v1+json OCI image layout directory; the digest is the image manifest's
//
// The tree format deliberately writes only the manifest: a directory checkout is
// the store's business (its hardlink farms), and the manifest is what identifies
// the tree.
//
// The tar stream is archive/tar in PAX format: mode, uid and gid from the manifest,
// ModTime the epoch, no access or change times, empty Uname and Gname; PAX records
// appear only where USTAR cannot hold a value (long names, large ids), with Go's
// deterministic record order. File contents are checked against the manifest's
// size and digest while they are written.
//
// The squashfs image is made by
//
//	mksquashfs SRC IMG -noappend -quiet -no-progress -reproducible -no-xattrs -no-hardlinks
//	    -all-time EPOCH -mkfs-time EPOCH -root-mode 755 -root-uid 0 -root-gid 0
//	    -comp zstd -b 131072 -pf PSEUDO
//
// where PSEUDO holds one "path m mode uid gid" line per entry, so owners and modes
// come from the manifest even when SRC belongs to the build user.
//
// The ext4 image is made by mkfs.ext4 -d with a private mke2fs.conf (the stock ext4
// feature set without orphan_file and metadata_csum_seed), -T default -b 4096
// -I 256 -m 0 -N entries+32, -U and -E hash_seed= derived UUIDs,
// -E lazy_itable_init=0,lazy_journal_init=0,nodiscard,no_copy_xattrs,root_owner=0:0
// and E2FSPROGS_FAKE_TIME=EPOCH (1 when the epoch is 0, which e2fsprogs treats as
// unset). mkfs.ext4 copies owners, modes and times from the source inodes, so
// debugfs -w then sets uid, gid, mode and a/m/c/crtime of every inode from the
// manifest; this works without root. Paths containing a double quote, a backslash
// or a line break cannot be named to debugfs and are rejected with ErrUnsupported.
// A tree's own lost+found directory becomes the filesystem's (with the
// manifest's mode and owner); a lost+found that is not a directory is
// rejected with ErrUnsupported. Device nodes and fifos are made by debugfs
// mknod, never staged, so no root is needed. Without Options.Size the size is computed
// from the tree (blocks of data and directories plus 10%, the inode table, the
// journal and 4 MiB, rounded up to a MiB) and grown by half, up to four times,
// when mkfs.ext4 runs out of space.
//
// The erofs image is made by mkfs.erofs --quiet -x -1 -T EPOCH -U UUID from a
// staging copy whose files carry the manifest's modes and owners, because
// mkfs.erofs 1.5 has no way to take them from a list. Staging other owners than
// 0:0, and device nodes, needs root: without it, a tree owned entirely by 0:0
// is made with --all-root and any other tree fails with ErrUnsupported.
// mkfs.erofs 1.5 silently skips every name that starts with "lost+found", at
// any depth; such entries are staged under a placeholder of the same length
// that sorts at the same place ("lost+founc..."), and the real names are then
// written over the placeholders in the image's directory blocks (and the
// superblock checksum updated). It also fails on names of 255 bytes, which
// are rejected with ErrUnsupported.
//
// Device nodes and fifos are written by every format: tar headers of type
// char, block and fifo; squashfs pseudo definitions (c, b, and i ... f);
// debugfs mknod for ext4; staged nodes for erofs.
//
// The oci layout holds oci-layout, index.json and blobs/sha256: one layer (the tar
// stream, gzip-compressed with a zero header by default, or zstd), a config with
// created = the epoch in RFC 3339, the platform from Options.Platform, the process
// fields from Options and rootfs.diff_ids = the digest of the uncompressed tar, the
// image manifest, and an index entry annotated with
// org.opencontainers.image.ref.name.
//
// # Sources of file data
//
// Filesystem tools need a directory. When Options.Checkout names one holding
// exactly the tree (checked path by path), squashfs reads it in place, and so does
// ext4 unless two of its files are one inode, as in a store's hardlink farm (mkfs.ext4
// would record a hardlink); then, and when there is no checkout, the tree is staged
// in Options.TempDir with hardlinks to Contents.BlobPath files where each inode is
// used once, and copies otherwise. Neither the checkout nor a blob is ever
// modified. erofs always stages copies.
//
// # Atomicity
//
// Artifacts are written under a temporary name next to the destination and renamed
// into place when complete; on error or cancellation the temporary files and
// staging directories are removed and the destination is untouched. Tools run
// with exec.CommandContext and are killed on cancellation; their failures are
// reported as *ToolError with the tail of their output.
package output
