// Package store is strata's local content-addressed store and action cache.
//
// A Store lives in one directory, shared safely by any number of goroutines and
// processes. Its layout is:
//
//	blobs/sha256/<2 hex>/<hex>                 content-addressed blobs (read-only)
//	files/<2 hex>/<hex>.<mode>.<uid>.<gid>     file objects: content plus metadata
//	actions/<key>.json                         action cache entries
//	failures/<key>.json                        the log of the last failed build of a key
//	weak/<weak key>.json                       inputs of the last build of a weak key
//	checkouts/<tree hex>/                      hardlink farms of trees, built once
//	leases/<name>.<random>                     live leases, one file each
//	state/<name>/                              other components' private data
//	locks/                                     flock files (gc.*, keys/)
//	tmp/<session>/                             temporary files of live writers
//	quarantine/                                objects that failed verification
//
// Nothing outside this package writes inside the directory: a component that keeps
// data beside the store asks for a state directory (StateDir). Those are private
// (0700), left alone by GC and Verify, and counted by Size and StateUsage. Open
// removes compile/ and host.json, where older versions kept the compile cache and
// the sandbox's probe results (drop that after one release).
//
// # Writes
//
// Every object is written to a temporary file inside the writer's session directory
// under tmp/ (made on the Store's first write), synced, renamed into place and its
// directory synced, so a reader never sees a partial object. Records that only point
// at objects (action entries, weak and failure records) are renamed into place after
// what they name is durable, and neither they nor their directory are synced: one
// lost in a crash is a miss, and one a crash left empty or torn reads as missing. Each
// open Store holds an exclusive flock on its session directory; Open removes session
// directories whose lock is free, which are the ones left by crashed writers.
//
// Close releases the session; a Store is not usable afterwards.
//
// # Content
//
// Content is addressed by OCI descriptor, in the shape of oras-go's content.Storage:
// Fetch, Exists and Push take an ocispec.Descriptor and check its size and digest;
// Ingest stores content whose digest is not known in advance and AddFile moves a
// finished file in without copying (holes included). Pushing content that is already
// there is not an error. A tree manifest's media type is TreeMediaType.
//
// The older calls work on digests: PutBlob, PutBytes, OpenBlob, OpenBlobSize,
// ReadBlob, HasBlob and BlobPath. OpenBlob and Fetch re-hash while reading and report
// ErrCorrupt instead of io.EOF when the bytes do not match the digest, so tampered
// bytes are never served silently.
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
// # Action cache and failure records
//
// PutAction records the result of a build step under its key after checking that
// every blob it refers to exists; GetAction returns ErrNotFound for a miss, including an
// entry whose blobs have gone. List describes every entry for "strata cache ls";
// RemoveAction drops one. PutFailure keeps the log of the last failed build of a key
// and LastFailure returns it; a failure record keeps its log alive like an action
// entry does, is never a cache hit, and goes when the key succeeds. PutWeak and
// GetWeak keep the key inputs of the last build of a weak key, for explain.
//
// # Leases
//
// A build, or a long-lived worker, holds a lease (NewLease) on exactly the objects it
// uses, as containerd does: every call made with a context from WithLease that
// returns or creates an object adds it to the lease before it looks for it (Fetch,
// Exists, Push, Ingest, AddFile, PutBlob, PutBytes, LinkFile, PutTree, GetTree,
// CommitDir, CommitUpper, Checkout, LastFailure, and GetAction for the entry's tree,
// log, outputs and inputs). Lease.Add adds digests by hand. A leased tree keeps its
// manifest, its file objects and its checkout. A lease is a file its process holds a
// flock on, so it ends when Release is called or the process dies; adding to it
// appends a line (no fsync), a few microseconds per call. A worker makes one lease
// per node and releases it, so nothing stays pinned for ever. A call made without a
// lease pins nothing: what it writes is GC's to take once it is unreferenced.
//
// # Garbage collection and its locking
//
// GC never waits for a build. It first works without any lock: it walks the store,
// reads the live leases and the records (action entries, failure records, weak
// records), chooses the least recently used records to drop until the store fits the
// size asked for (weak records also beyond the 10,000 most recently used), and lists
// every object no remaining record refers to and no lease holds. Then it removes the
// records, and then the objects, in slices of at most 10 ms, each an exclusive section
// on locks/gc.lock that first catches up with the lease lines and records written
// since GC looked; a record used or replaced since is kept, with what it refers to.
// Waiters on either side block in the kernel, so writers get in between two slices
// (deleting 20,000 objects here, a writer waited 40 µs on average, 40 ms at most).
// Writers hold gc.lock shared only
// around the few system calls that put an object in place (a rename) or add it to a
// lease, never across a build: an object is either placed before GC's section, and
// then leased or referenced by a record GC sees, or after it, and then it is a newer
// inode than the one GC listed, which GC does not touch. So an object a writer has
// written, or found already there, is never lost before it is referenced.
//
// flock is unfair, and a stream of overlapping shared holders could keep GC out for
// ever. GC therefore first takes locks/gc.intent exclusively: a process enters a
// shared section through that turnstile when none of its goroutines is in one, and
// a process that already is checks the turnstile before letting another goroutine
// in, so once GC waits no new section starts and gc.lock is free within
// microseconds. locks/gc.run keeps two GCs (or GC and Verify) from interleaving.
//
// # Verification
//
// Verify re-hashes every blob and file object beside running builds, then, in one
// exclusive section, moves bad objects to quarantine/ (leases do not protect them),
// drops the entries that refer to bad content or to a missing tree, log or output
// blob, and removes checkouts that contain bad objects, so the next build rebuilds
// instead of using bad bytes. Size reports the store's disk usage.
//
// LockKey serialises the builds of one key across processes; a lock whose holder
// dies is released by the kernel.
package store
