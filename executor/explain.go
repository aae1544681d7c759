package executor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/store"
)

// weakRecord is what a build stores under a node's weak key: the strong key and
// key inputs it was built with, and its tree.
type weakRecord struct {
	Key       string          `json:"key"`
	Name      string          `json:"name"`
	KeyInputs json.RawMessage `json:"key_inputs"`
	Tree      digest.Digest   `json:"tree,omitempty"`
}

func putWeak(ctx context.Context, st *store.Store, host plan.Host, n *plan.Node, a *store.Action) error {
	ki, err := n.StrongKeyInputs(host)
	if err != nil {
		return err
	}
	rec := mustJSON(weakRecord{Key: n.ID, Name: n.Name, KeyInputs: ki, Tree: a.Tree})
	if err := st.PutWeak(ctx, n.WeakKey, rec); err != nil {
		return err
	}
	return st.PutWeak(ctx, nameRecordKey(n.Name), rec)
}

// nameRecordKey names the record of the last build of a node name, whatever its
// weak key: a change to the node's own options changes its weak key too, and
// Explain still finds what it was built with before.
func nameRecordKey(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "name-" + hex.EncodeToString(sum[:])
}

// putNodeLog keeps the log of a run that left no action entry (a failed node,
// a cleanup hook) as the node's failure record, which GC collects with the
// actions.
func putNodeLog(ctx context.Context, st *store.Store, id string, log digest.Digest) error {
	return st.PutFailure(ctx, id, log)
}

// ErrNoLog is returned by NodeLog for a node with no log in the store.
var ErrNoLog = errors.New("no log in the store")

// NodeLog returns the digest of the node's last log: that of its action entry,
// or else the log of its last failed run (or, for a hook, its last run).
func NodeLog(ctx context.Context, st *store.Store, n *plan.Node) (digest.Digest, error) {
	if a, err := st.GetAction(ctx, n.ID); err == nil && a.Log != "" {
		return a.Log, nil
	}
	if d, err := st.LastFailure(ctx, n.ID); err == nil {
		return d, nil
	}
	return "", fmt.Errorf("%s: %w (never built, or built by a step that keeps no log)", n.Name, ErrNoLog)
}

// Explanation statuses.
const (
	ExplainCached     = "cached"
	ExplainNeverBuilt = "never built"
	ExplainChanged    = "changed"
	ExplainEvicted    = "evicted"
)

// Diff is one key input that differs from the last build: a JSON path into the
// key inputs with the old and new values as compact JSON ("" when absent).
type Diff struct {
	Path string `json:"path"`
	Old  string `json:"old"`
	New  string `json:"new"`
}

// Explanation says why a node is or is not cached.
type Explanation struct {
	Node   string `json:"node"`
	Name   string `json:"name"`
	Status string `json:"status"`
	// LastKey is the strong key of the last build of the same weak key.
	LastKey string `json:"last_key,omitempty"`
	Diffs   []Diff `json:"diffs,omitempty"`
}

// String is a one-line explanation.
func (e *Explanation) String() string {
	switch e.Status {
	case ExplainCached:
		return "cached"
	case ExplainNeverBuilt:
		return "never built (no earlier build of " + e.Name + " in this store)"
	case ExplainEvicted:
		return "built before with the same inputs, but the cache entry is gone (garbage-collected or corrupt)"
	}
	parts := make([]string, len(e.Diffs))
	for i, d := range e.Diffs {
		parts[i] = fmt.Sprintf("%s: %s → %s", d.Path, short(d.Old), short(d.New))
	}
	return "changed: " + strings.Join(parts, "; ")
}

var hexRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`[0-9a-f]{64}`) })

// short abbreviates digests and long values for display.
func short(s string) string {
	if s == "" {
		return "(absent)"
	}
	s = hexRe().ReplaceAllStringFunc(s, func(h string) string { return h[:12] + "…" })
	if len(s) > 120 {
		s = s[:117] + "…"
	}
	return s
}

// Explain compares the node's key inputs with those of the last build of its weak
// key (or, when the node's own options changed its weak key, of the last build of
// its name) and says which differ.
func Explain(ctx context.Context, st *store.Store, host plan.Host, n *plan.Node) (*Explanation, error) {
	ex := &Explanation{Node: n.ID, Name: n.Name}
	if _, err := st.GetAction(ctx, n.ID); err == nil {
		ex.Status = ExplainCached
		return ex, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	b, err := st.GetWeak(ctx, n.WeakKey)
	if errors.Is(err, store.ErrNotFound) {
		b, err = st.GetWeak(ctx, nameRecordKey(n.Name))
	}
	if errors.Is(err, store.ErrNotFound) {
		ex.Status = ExplainNeverBuilt
		return ex, nil
	}
	if err != nil {
		return nil, err
	}
	var r weakRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("explain %s: weak record: %w", n.Name, err)
	}
	ex.LastKey = r.Key
	if r.Key == n.ID {
		ex.Status = ExplainEvicted
		return ex, nil
	}
	ex.Status = ExplainChanged
	ki, err := n.StrongKeyInputs(host)
	if err != nil {
		return nil, fmt.Errorf("explain %s: %w", n.Name, err)
	}
	ex.Diffs, err = DiffJSON(r.KeyInputs, ki)
	if err != nil {
		return nil, fmt.Errorf("explain %s: %w", n.Name, err)
	}
	return ex, nil
}

// DiffJSON lists the leaves that differ between two JSON documents, by path
// (object keys joined with ".", array indexes as "[i]"), sorted by path.
func DiffJSON(old, new json.RawMessage) ([]Diff, error) {
	var a, b any
	if err := decodeNumber(old, &a); err != nil {
		return nil, err
	}
	if err := decodeNumber(new, &b); err != nil {
		return nil, err
	}
	var out []Diff
	diffValue("", a, b, true, true, &out)
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func decodeNumber(raw json.RawMessage, v *any) error {
	if len(raw) == 0 {
		*v = nil
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}

func compact(v any, present bool) string {
	if !present {
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func diffValue(p string, a, b any, hasA, hasB bool, out *[]Diff) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok && hasA && hasB {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		for k := range keys {
			q := k
			if p != "" {
				q = p + "." + k
			}
			av, ha := am[k]
			bv, hb := bm[k]
			diffValue(q, av, bv, ha, hb, out)
		}
		return
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok && hasA && hasB && len(al) == len(bl) {
		for i := range al {
			diffValue(p+"["+strconv.Itoa(i)+"]", al[i], bl[i], true, true, out)
		}
		return
	}
	ca, cb := compact(a, hasA), compact(b, hasB)
	if ca != cb {
		if p == "" {
			p = "."
		}
		*out = append(*out, Diff{Path: p, Old: ca, New: cb})
	}
}
