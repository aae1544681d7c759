package store

import (
	"container/list"
	"context"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/executor/tree"
)

// treeCacheSize bounds the decoded manifests a Store keeps. A build reads the
// tree a stage just committed as the next stage's input, and PutAction reads it
// again; decoding a 100,000-entry manifest costs about half a second.
const treeCacheSize = 8

// treeCache holds recently put or read manifests, decoded, and remembers which
// trees are complete: committed by this Store (CommitDir, CommitUpper) under a
// lease, so every file blob they name was linked or belongs to their recorded
// base, and stays while that lease lives. Callers get copies, so mutating a
// returned tree never changes the cache. Guarded by Store.mu.
type treeCache struct {
	lru      *list.List // of *cachedTree, most recent first
	byDigest map[digest.Digest]*list.Element
	complete map[digest.Digest]*Lease
	// swept is the size of complete after its last sweep of released leases:
	// the next sweep waits until it has doubled, so marking n trees costs
	// O(n) in all, not a sweep each.
	swept int
}

type cachedTree struct {
	d digest.Digest
	t *tree.Tree
}

func copyTree(t *tree.Tree) *tree.Tree {
	return &tree.Tree{Entries: append([]tree.Entry(nil), t.Entries...)}
}

func (s *Store) cacheTree(d digest.Digest, t *tree.Tree) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.trees
	if c.lru == nil {
		c.lru, c.byDigest = list.New(), map[digest.Digest]*list.Element{}
	}
	if el, ok := c.byDigest[d]; ok {
		c.lru.MoveToFront(el)
		return
	}
	c.byDigest[d] = c.lru.PushFront(&cachedTree{d: d, t: copyTree(t)})
	for c.lru.Len() > treeCacheSize {
		old := c.lru.Remove(c.lru.Back()).(*cachedTree)
		delete(c.byDigest, old.d)
	}
}

func (s *Store) cachedTree(d digest.Digest) (*tree.Tree, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.trees.byDigest[d]
	if !ok {
		return nil, false
	}
	s.trees.lru.MoveToFront(el)
	return copyTree(el.Value.(*cachedTree).t), true
}

// markComplete records that the tree d, just committed, is complete for as long
// as the call's lease lives. Without a lease nothing keeps its files from GC, so
// PutAction checks them.
func (s *Store) markComplete(ctx context.Context, d digest.Digest) {
	l, _ := s.leaseOf(ctx)
	if l == nil || l.path == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trees.complete == nil {
		s.trees.complete = map[digest.Digest]*Lease{}
	}
	if len(s.trees.complete) >= 2*max(s.trees.swept, 64) {
		for d, l := range s.trees.complete {
			if !l.live() {
				delete(s.trees.complete, d)
			}
		}
		s.trees.swept = len(s.trees.complete)
	}
	s.trees.complete[d] = l
}

func (s *Store) isComplete(d digest.Digest) bool {
	s.mu.Lock()
	l := s.trees.complete[d]
	s.mu.Unlock()
	return l != nil && l.live()
}
