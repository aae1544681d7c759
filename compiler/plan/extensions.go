package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// BuiltinStage is a built-in stage type as keys see it. ABI is the version of the
// stage's behaviour: a built-in's module digest is its name and ABI, so bumping
// the ABI (when the stage gives a different tree for the same options)
// invalidates every key that used it.
type BuiltinStage struct {
	Name string
	ABI  int
}

// OutputFormat is an output format as keys and the registry see it.
type OutputFormat struct {
	Name string
	ABI  int
	// MediaType is the media type of the artifact the format produces (for oci,
	// of the image manifest the result points at).
	MediaType string
}

// BuiltinStages and OutputFormats are the one table of each extension kind: the
// CUE schema, the compiler and the executor's implementations are checked
// against them by a test (cmd/strata/abi_test.go).
var (
	BuiltinStages = []BuiltinStage{
		{"strata.busybox", 1},
		{"strata.copy", 1},
		{"strata.debootstrap", 1},
		{"strata.extract", 1},
		{"strata.files", 1},
		{"strata.hostname", 1},
		{"strata.run", 1},
		{"strata.users", 2}, // 2: primary groups, no lastchg of 0
	}
	OutputFormats = []OutputFormat{
		{"tree", 1, "application/vnd.strata.tree.v1+json"},
		{"tar", 1, "application/vnd.strata.tar"},
		{"tar.zst", 1, "application/vnd.strata.tar+zstd"},
		{"squashfs", 1, "application/vnd.strata.squashfs"},
		{"ext4", 1, "application/vnd.strata.ext4"},
		// erofs 2: entries named lost+found* are no longer dropped.
		{"erofs", 2, "application/vnd.strata.erofs"},
		// oci 2: the reference is named after the version, which is annotated.
		{"oci", 2, "application/vnd.oci.image.manifest.v1+json"},
	}
)

// LookupBuiltin returns the built-in stage type name.
func LookupBuiltin(name string) (BuiltinStage, bool) {
	for _, b := range BuiltinStages {
		if b.Name == name {
			return b, true
		}
	}
	return BuiltinStage{}, false
}

// LookupOutput returns the output format name.
func LookupOutput(name string) (OutputFormat, bool) {
	for _, f := range OutputFormats {
		if f.Name == name {
			return f, true
		}
	}
	return OutputFormat{}, false
}

// Digest is the module digest of nodes of the built-in stage type.
func (b BuiltinStage) Digest() string { return digestOf(fmt.Sprintf("builtin:%s@%d", b.Name, b.ABI)) }

// Digest is the module digest of output nodes of the format.
func (f OutputFormat) Digest() string { return digestOf(fmt.Sprintf("output:%s@%d", f.Name, f.ABI)) }

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
