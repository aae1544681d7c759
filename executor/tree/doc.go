// Package tree defines the manifest of a file tree as strata stores it: a sorted
// list of entries (path, type, mode, owner, size, content digest or link target).
//
// A manifest is the unit the store, the stages and the output assemblers exchange.
// Its canonical encoding is deterministic, so its digest identifies the tree.
package tree
