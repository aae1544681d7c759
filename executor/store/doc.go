// Package store is strata's local content-addressed store and action cache.
//
// A Store lives in one directory, shared safely by any number of goroutines and
// processes. Its layout is:
//
//	blobs/sha256/<2 hex>/<hex>                 content-addressed blobs (read-only)
//	files/<2 hex>/<hex>.<mode>.<uid>.<gid>     file objects: content plus metadata
//	actions/<key>.json                         action cache entries
//	weak/<weak key>.json                       inputs of the last build of a weak key
//	checkouts/<tree hex>/                      hardlink farms of trees, built once
//	locks/                                     flock files (gc.lock, keys/)
//	tmp/<session>/                             temporary files of live writers
//	quarantine/                                objects that failed verification
//
// # Writes
//
// Every object is written to a temporary file inside the writer's session directory
// under tmp/, synced, renamed into place and its directory synced, so a reader never
// sees a partial object. Each open Store holds an exclusive flock on its session
// directory; Open removes session directories whose lock is free, which are the ones
// left by crashed writers.
//
// Close releases the session; a Store is not usable afterwards.
//
// # Blobs and file objects
//
// PutBlob, PutBytes, OpenBlob, OpenBlobSize, ReadBlob, HasBlob and BlobPath handle
// plain blobs.
// OpenBlob re-hashes while reading and reports ErrCorrupt instead of io.EOF when the
// bytes do not match the digest, so tampered bytes are never served silently.
//
// A file object is an inode holding a blob's content with a given mode, uid and gid, so
// that checkouts can hardlink it (like ostree's "bare" repositories). LinkFile hashes a
// freshly written file and links it into the store without copying; the blob path of
// the same content is a hardlink to one of its file objects.
//
// # Trees and checkouts
//
// PutTree and GetTree store tree manifests (package executor/tree) as blobs of their
// canonical encoding. CommitDir records a plain directory; CommitUpper applies an
// overlayfs upper directory to a base tree, hashing only the changes. Checkout returns a
// read-only hardlink farm of a tree, built once and reused.
//
// # Action cache
//
// PutAction records the result of a build step under its key after checking that
// every blob it refers to exists; GetAction returns ErrNotFound for a miss, including an
// entry whose blobs have gone. PutWeak and GetWeak keep the key inputs of the last build
// of a weak key. List describes every entry for "strata cache ls"; RemoveAction drops one.
//
// # Locking and garbage collection
//
// LockKey serialises the builds of one key across processes. A build holds Hold (a
// shared lock) from before it writes its first object until after PutAction; GC and
// Verify take the same lock exclusively, so they never remove what a running build is
// writing. A lock whose holder dies is released by the kernel.
//
// GC drops the least recently used action entries until the store fits a size, then
// removes every object no remaining entry refers to; Size reports the store's disk usage. Verify re-hashes every object,
// moves bad ones to quarantine/ and drops the entries and checkouts that refer to them.
package store
