package compiler

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/lang"
)

// BuiltinABI is the implementation version of every built-in stage type. A
// built-in's module digest is its name and ABI, so bumping the ABI (when a stage
// gives a different tree for the same options) invalidates every key that used it.
// The executor's implementations must declare the same numbers (a test checks).
var BuiltinABI = map[string]int{
	"strata.files":       1,
	"strata.copy":        1,
	"strata.extract":     1,
	"strata.run":         1,
	"strata.users":       2, // 2: primary groups, no lastchg of 0
	"strata.hostname":    1,
	"strata.busybox":     1,
	"strata.debootstrap": 1,
}

// OutputABI is the implementation version of every output format.
var OutputABI = map[string]int{
	// erofs 2: entries named lost+found* are no longer dropped. oci 2: the
	// reference is named after the version, which is annotated.
	"tree": 1, "tar": 1, "tar.zst": 1, "squashfs": 1, "ext4": 1, "erofs": 2, "oci": 2,
}

// ModuleDigest returns the implementation digest of a stage type: its name and ABI
// for a built-in; the digest of its option schema, command template and build
// root for a user module.
func ModuleDigest(m *lang.StageModule) (string, error) {
	if m.Builtin {
		abi, ok := BuiltinABI[m.Name]
		if !ok {
			return "", fmt.Errorf("built-in stage type %q has no ABI version in the compiler", m.Name)
		}
		return digestOf(fmt.Sprintf("builtin:%s@%d", m.Name, abi)), nil
	}
	return keyOf(map[string]any{
		"module":    m.Name,
		"schema":    m.Schema,
		"command":   m.Command,
		"buildroot": m.BuildRoot,
	})
}

// Modules lists the workspace's stage types, built-ins first, then by name.
func Modules(ws *lang.Workspace) ([]*plan.Module, error) {
	var out []*plan.Module
	for _, m := range ws.StageModules {
		d, err := ModuleDigest(m)
		if err != nil {
			return nil, err
		}
		out = append(out, &plan.Module{Name: m.Name, Doc: m.Doc, Builtin: m.Builtin, Schema: m.Schema, Digest: d})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Builtin != out[j].Builtin {
			return out[i].Builtin
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
