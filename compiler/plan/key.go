package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/gowebpki/jcs"
)

// KeyVersion is hashed into every key; bump it when the key rules change, or
// what a node makes from the same key (2: output names and hook on_failure
// became fields of the document, not options; 3: sources keep only the
// executable bit, and a hard link strata.extract makes without root has its
// target's owner, so results cached before are not what the key now means).
const KeyVersion = 3

// keyDoc is what a key hashes (DESIGN §3). For the strong key Inputs hold the
// dependencies' strong keys; the compiler's weak key uses their names instead.
type keyDoc struct {
	KeyVersion   int               `json:"key_version"`
	Kind         string            `json:"kind"`
	Type         string            `json:"type"`
	ModuleDigest string            `json:"module_digest,omitempty"`
	Options      json.RawMessage   `json:"options,omitempty"`
	Command      []string          `json:"command,omitempty"`
	Inputs       KeyInputRefs      `json:"inputs"`
	Network      bool              `json:"network"`
	Platform     *Platform         `json:"platform,omitempty"`
	Env          map[string]string `json:"env,omitempty"`
	Source       *Source           `json:"source,omitempty"`
	Artifact     string            `json:"artifact,omitempty"`
	OnFailure    string            `json:"on_failure,omitempty"`
	Host         *Host             `json:"host,omitempty"`
}

// KeyInputRefs are a node's build-time dependencies as they enter a key: strong
// keys for the strong key, names for the weak key.
type KeyInputRefs struct {
	Tree      string            `json:"tree,omitempty"`
	BuildRoot string            `json:"buildroot,omitempty"`
	Mounts    map[string]string `json:"mounts,omitempty"`
	After     []string          `json:"after,omitempty"`
}

// KeyDocument returns the canonical (RFC 8785) JSON that a key of n hashes, with
// the given dependency references. The strong key is StrongKeyInputs; the
// compiler passes dependency names to make the weak key.
func (n *Node) KeyDocument(host Host, refs KeyInputRefs) ([]byte, error) {
	doc := keyDoc{
		KeyVersion: KeyVersion, Kind: n.Kind, Type: n.Type, ModuleDigest: n.ModuleDigest,
		Options: n.Options, Command: n.Command, Inputs: refs, Network: n.Network,
		Platform: n.Platform, Env: n.Env, Artifact: n.Artifact, OnFailure: n.OnFailure,
	}
	if n.Source != nil {
		// A source is keyed by its content's identity, not by where it was found:
		// a mirror or a moved workspace rebuilds nothing.
		doc.Source = &Source{SHA256: n.Source.SHA256, Digest: n.Source.Digest, Commit: n.Source.Commit}
	}
	if n.Inputs.BuildRoot == HostRoot {
		doc.Host = &host
	}
	if b, ok := appendKeyDoc(make([]byte, 0, 512), &doc); ok {
		return b, nil
	}
	b, err := marshalKeyDoc(&doc)
	if err != nil {
		return nil, fmt.Errorf("key of %s: %w", n.Name, err)
	}
	return b, nil
}

// marshalKeyDoc is the general path of KeyDocument (see appendKeyDoc).
func marshalKeyDoc(doc *keyDoc) ([]byte, error) {
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(b)
}

// StrongKeyInputs returns the document n's strong key (its ID) hashes: the node's
// own fields and the strong keys of its dependencies. `strata explain` compares it
// with the last build of the node.
func (n *Node) StrongKeyInputs(host Host) ([]byte, error) {
	return n.KeyDocument(host, KeyInputRefs{
		Tree: n.Inputs.Tree, BuildRoot: n.Inputs.BuildRoot, Mounts: n.Inputs.Mounts, After: n.Inputs.After,
	})
}

// Hash returns the key of a key document: hex SHA-256.
func Hash(doc []byte) string {
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:])
}
