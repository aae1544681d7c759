// Package compilecache keeps compiled plans in the store, keyed by everything a
// compile reads, so that compiling an unchanged workspace again costs a few file
// reads instead of a CUE evaluation.
//
// An entry lives at <dir>/<key>.json, where strata gives the cache the store's
// state directory "compile" (<store>/state/compile/). The key (see Key) is the SHA-256
// of the strata version and binary, the host fingerprint, the embedded schema and
// every input file of the workspace, the files its CUE embeds (@embed) included.
// Local path sources are hashed by content by
// the compiler; an entry records each one's digest and is only used when every
// path still hashes the same (see Cache.Get). Entries are written through a
// temporary file and a rename, and a damaged entry is a miss that is removed.
package compilecache
