package executor

import (
	"encoding/json"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/output"
	"github.com/strata-build/strata/executor/store"
)

// MediaTypeTree is a tree manifest (executor/tree), the one media type of
// the output table (output.MediaTypeTree) that the store also knows
// (store.TreeMediaType; TestTreeMediaTypeAgrees).
var MediaTypeTree = output.MediaTypeTree

// MediaTypeLog is a node's log: its command's stdout and stderr.
const MediaTypeLog = "text/plain; charset=utf-8"

// Result is what running a node gave, as content descriptors (digest, size,
// media type): any machine that can fetch them by digest can use them, and no
// result points into another node's working state.
type Result struct {
	// Tree is the node's tree manifest: a source's or stage's tree, an oci
	// output's layout, a tree output's tree. Zero for other nodes.
	Tree ocispec.Descriptor `json:"tree,omitzero"`
	// Outputs are an output node's artifacts by file name.
	Outputs map[string]ocispec.Descriptor `json:"outputs,omitempty"`
	// Log is the node's log, when it ran a command.
	Log ocispec.Descriptor `json:"log,omitzero"`
	// File names the only file of a single-file source's tree.
	File string `json:"file,omitempty"`
	// Warning is what a hook that failed with on_failure "warn" said; a cached
	// result says it again.
	Warning string `json:"warning,omitempty"`
	// Cached reports that the result came from the action cache.
	Cached bool `json:"cached,omitempty"`

	// record is the local action record the result was read from or written
	// to, for a build record (see buildRecord).
	record store.ActionStamp
}

// Inputs are the results of a node's finished dependencies, by node ID.
type Inputs map[string]Result

// resultMeta is what an action keeps beside its digests to rebuild a Result.
type resultMeta struct {
	// Name is the node's name when it was built, for "strata cache ls".
	Name    string                       `json:"name,omitempty"`
	File    string                       `json:"file,omitempty"`
	Warning string                       `json:"warning,omitempty"`
	Tree    int64                        `json:"tree_size,omitempty"`
	Log     int64                        `json:"log_size,omitempty"`
	Outputs map[string]outputDescription `json:"outputs,omitempty"`
	// Size and MediaType describe the single artifact of entries written by
	// earlier versions.
	Size      int64  `json:"size,omitempty"`
	MediaType string `json:"media_type,omitempty"`
}

type outputDescription struct {
	Size      int64  `json:"size"`
	MediaType string `json:"media_type"`
}

// action is the action cache entry of r for node n.
func (r Result) action(n *plan.Node, inputs []digest.Digest) *store.Action {
	m := resultMeta{Name: n.Name, File: r.File, Warning: r.Warning, Tree: r.Tree.Size, Log: r.Log.Size}
	a := &store.Action{Key: n.ID, WeakKey: n.WeakKey, Tree: r.Tree.Digest, Log: r.Log.Digest, Inputs: inputs}
	for name, o := range r.Outputs {
		if a.Outputs == nil {
			a.Outputs, m.Outputs = map[string]digest.Digest{}, map[string]outputDescription{}
		}
		a.Outputs[name] = o.Digest
		m.Outputs[name] = outputDescription{Size: o.Size, MediaType: o.MediaType}
	}
	a.Meta, _ = json.Marshal(m)
	return a
}

// resultOf rebuilds the Result an action entry holds.
func resultOf(a *store.Action) Result {
	var m resultMeta
	if len(a.Meta) > 0 {
		_ = json.Unmarshal(a.Meta, &m)
	}
	r := Result{File: m.File, Warning: m.Warning, record: a.Stamp()}
	if a.Tree != "" {
		r.Tree = ocispec.Descriptor{MediaType: MediaTypeTree, Digest: a.Tree, Size: m.Tree}
	}
	if a.Log != "" {
		r.Log = ocispec.Descriptor{MediaType: MediaTypeLog, Digest: a.Log, Size: m.Log}
	}
	for name, d := range a.Outputs {
		if r.Outputs == nil {
			r.Outputs = map[string]ocispec.Descriptor{}
		}
		o, ok := m.Outputs[name]
		if !ok && len(a.Outputs) == 1 {
			o = outputDescription{Size: m.Size, MediaType: m.MediaType}
		}
		r.Outputs[name] = ocispec.Descriptor{MediaType: o.MediaType, Digest: d, Size: o.Size}
	}
	return r
}
