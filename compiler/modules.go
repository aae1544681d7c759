package compiler

import (
	"fmt"
	"sort"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/lang"
)

// ModuleDigest returns the implementation digest of a stage type: its name and ABI
// for a built-in; the digest of its option schema, command template and build
// root for a user module.
func ModuleDigest(m *lang.StageModule) (string, error) {
	if m.Builtin {
		b, ok := plan.LookupBuiltin(m.Name)
		if !ok {
			return "", fmt.Errorf("built-in stage type %q is not in plan.BuiltinStages", m.Name)
		}
		return b.Digest(), nil
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
