// Package builtin implements strata's built-in stage types (strata.files,
// strata.copy, strata.extract, strata.users, strata.hostname, strata.busybox,
// strata.debootstrap, and the validation of strata.run).
//
// The package is pure Go and knows nothing about the sandbox that runs it: a
// stage is [Run] with its JSON options and an [Env] naming the target tree and
// the read-only inputs. Inside the sandbox the static strata binary is bound at
// [BinaryPath] and invoked as "strata builtin TYPE"; [RunFromSandbox] reads the
// fixed paths ([OptionsFile], [TreeDir], [InputsDir]) and calls [Run].
//
// # Path safety
//
// Every path option is tree-absolute ("/etc/hostname") and is resolved inside
// the tree through an [os.Root]. Intermediate symbolic links are followed with
// chroot semantics: an absolute target is taken relative to the tree root and
// ".." stops at the root, so a link such as "/etc -> /" or "/etc -> ../.."
// leads back into the tree, never out of it. The resolved path is then used
// through the same [os.Root], which refuses anything that would still escape.
// The final component of a path being written is never followed: an existing
// file or symlink there is removed and replaced (so a write can never go
// through a hard link or a symbolic link), and an existing directory is an
// error unless a directory was asked for.
//
// # Archives
//
// strata.extract streams tar, tar.gz and tar.zst archives with bounded memory.
// Entry names lose leading slashes (as GNU tar does) and are rejected when they
// contain a ".." component; symbolic links are created verbatim and later
// entries written through them stay confined to the extraction directory (chroot
// semantics); hard links may only point at files already under the extraction
// directory; device nodes and fifos are rejected; setuid, setgid and sticky bits
// are kept because they are part of images; a duplicate entry replaces the
// earlier one. Total uncompressed bytes, entry count and name lengths are capped
// (see [DefaultMaxExtractBytes], [DefaultMaxExtractEntries]); the byte cap is
// lowered to 9/10 of the free space of the tree's filesystem, so a large
// archive fails with a clear error instead of filling the disk. Past
// [RatioMinBytes], an archive may not expand more than max_ratio times
// ([DefaultMaxRatio]) the compressed bytes read, which stops decompression
// bombs early. Exceeding a cap stops extraction with an error wrapping [ErrLimit].
//
// # Ownership
//
// Stages run as uid 0 of the sandbox's user namespace. Owners asked for
// explicitly (strata.files, strata.users) must be settable: if the kernel
// refuses a non-zero id (EPERM or EINVAL, an id the namespace does not map) the
// stage fails naming the path and id. Owners carried by inputs (strata.copy,
// strata.extract) are kept where permitted and otherwise left to the stage's
// own id; the executor is expected to map the ids a tree uses. Modification
// times are not set: the tree manifest does not record them.
package builtin
