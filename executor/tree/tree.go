package tree

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Kind is the type of a tree entry.
type Kind string

// The kinds of entry a tree holds. Device nodes and fifos are recorded so that
// images can ship them (/dev/console, /dev/null for an initramfs); build roots
// still get /dev from the sandbox. Sockets are deliberately absent: they are
// runtime objects, never content.
const (
	File     Kind = "file"
	Dir      Kind = "dir"
	Symlink  Kind = "symlink"
	CharDev  Kind = "chardev"
	BlockDev Kind = "blockdev"
	Fifo     Kind = "fifo"
)

// IsDevice reports whether k is a device node or a fifo: an entry with no
// content whose identity is its type and, for devices, its numbers.
func (k Kind) IsDevice() bool { return k == CharDev || k == BlockDev || k == Fifo }

// Entry is one path in a tree.
type Entry struct {
	// Path is slash-separated and relative to the tree root, with no leading slash,
	// no "." or ".." elements; the root itself is never an entry.
	Path string `json:"path"`
	Type Kind   `json:"type"`
	// Mode holds the permission bits including setuid, setgid and sticky (07777).
	// Symlinks carry 0o777.
	Mode uint32 `json:"mode"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	// Size and Digest are set for files only.
	Size   int64         `json:"size,omitempty"`
	Digest digest.Digest `json:"digest,omitempty"`
	// Target is set for symlinks only.
	Target string `json:"target,omitempty"`
	// Major and Minor are the device numbers of a CharDev or BlockDev; zero otherwise.
	Major uint32 `json:"major,omitempty"`
	Minor uint32 `json:"minor,omitempty"`
}

// Tree is a manifest: entries sorted by Path, each path once.
type Tree struct {
	Entries []Entry `json:"entries"`
}

// ErrInvalid is wrapped by every validation failure.
var ErrInvalid = errors.New("invalid tree manifest")

// Sort orders the entries by path, the order Encode and Validate require.
func (t *Tree) Sort() {
	sort.Slice(t.Entries, func(i, j int) bool { return t.Entries[i].Path < t.Entries[j].Path })
}

// Validate checks that the manifest is well formed: clean relative paths, sorted and
// unique, every parent present as a directory, and fields consistent with each kind.
func (t *Tree) Validate() error {
	dirs := map[string]bool{".": true}
	for i, e := range t.Entries {
		if err := ValidPath(e.Path); err != nil {
			return fmt.Errorf("%w: entry %d: %v", ErrInvalid, i, err)
		}
		if i > 0 && t.Entries[i-1].Path >= e.Path {
			return fmt.Errorf("%w: entries not sorted or duplicated at %q", ErrInvalid, e.Path)
		}
		if !dirs[path.Dir(e.Path)] {
			return fmt.Errorf("%w: parent of %q is not a directory in the tree", ErrInvalid, e.Path)
		}
		if e.Mode&^0o7777 != 0 {
			return fmt.Errorf("%w: %q: mode %o has bits beyond 07777", ErrInvalid, e.Path, e.Mode)
		}
		if (e.Major != 0 || e.Minor != 0) && e.Type != CharDev && e.Type != BlockDev {
			return fmt.Errorf("%w: %q: device numbers on a %s", ErrInvalid, e.Path, e.Type)
		}
		switch e.Type {
		case File:
			if !IsSHA256(e.Digest) {
				return fmt.Errorf("%w: %q: file needs a sha256 digest", ErrInvalid, e.Path)
			}
			if e.Size < 0 {
				return fmt.Errorf("%w: %q: negative size", ErrInvalid, e.Path)
			}
		case Dir:
			dirs[e.Path] = true
		case Symlink:
			if e.Target == "" {
				return fmt.Errorf("%w: %q: symlink without target", ErrInvalid, e.Path)
			}
		case CharDev, BlockDev, Fifo:
			if e.Size != 0 || e.Digest != "" || e.Target != "" {
				return fmt.Errorf("%w: %q: a %s has no size, digest or target", ErrInvalid, e.Path, e.Type)
			}
		default:
			return fmt.Errorf("%w: %q: unknown type %q", ErrInvalid, e.Path, e.Type)
		}
	}
	return nil
}

// IsSHA256 reports whether d is "sha256:" and 64 lowercase hex digits. It is
// what go-digest's Validate checks for sha256, without its regular expression,
// which dominated decoding large manifests.
func IsSHA256(d digest.Digest) bool {
	const prefix = "sha256:"
	s := string(d)
	if len(s) != len(prefix)+64 || s[:len(prefix)] != prefix {
		return false
	}
	for i := len(prefix); i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ValidPath reports whether p is a clean, relative, slash-separated path inside a tree.
func ValidPath(p string) error {
	if p == "" || p == "." {
		return fmt.Errorf("empty path")
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q is absolute", p)
	}
	if path.Clean(p) != p {
		return fmt.Errorf("path %q is not clean", p)
	}
	if p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("path %q escapes the tree", p)
	}
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("path %q contains NUL", p)
	}
	return nil
}

// Encode returns the canonical bytes of the manifest: compact JSON of the sorted
// entries with fields in declaration order. Equal trees encode to equal bytes.
func (t *Tree) Encode() ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(t); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Digest returns the digest of the canonical encoding, which identifies the tree.
func (t *Tree) Digest() (digest.Digest, error) {
	b, err := t.Encode()
	if err != nil {
		return "", err
	}
	return digest.FromBytes(b), nil
}

// Decode parses and validates a manifest.
func Decode(b []byte) (*Tree, error) {
	var t Tree
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// Lookup returns the entry at p, if present.
func (t *Tree) Lookup(p string) (Entry, bool) {
	i := sort.Search(len(t.Entries), func(i int) bool { return t.Entries[i].Path >= p })
	if i < len(t.Entries) && t.Entries[i].Path == p {
		return t.Entries[i], true
	}
	return Entry{}, false
}
