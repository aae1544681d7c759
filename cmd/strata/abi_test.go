package main

import (
	"context"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/executor/builtin"
	"github.com/strata-build/strata/lang"
)

// TestBuiltinStagesAgree: the schema, the compiler's ABI table (which keys built-in
// stages) and the executor's implementations list the same stage types with the
// same ABI versions. A stage whose implementation changed output for the same
// options must bump both numbers, or caches would serve stale trees.
func TestBuiltinStagesAgree(t *testing.T) {
	ws, err := lang.Builtins(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var schemaTypes []string
	for name := range ws.StageModules {
		schemaTypes = append(schemaTypes, name)
	}
	sort.Strings(schemaTypes)
	if d := cmp.Diff(schemaTypes, builtin.Types()); d != "" {
		t.Errorf("schema #Builtin vs executor/builtin.Types() (-schema +executor):\n%s", d)
	}
	for _, typ := range builtin.Types() {
		info, ok := builtin.Info(typ)
		if !ok {
			t.Errorf("%s: no Info", typ)
			continue
		}
		if abi, ok := compiler.BuiltinABI[typ]; !ok || abi != info.ABI {
			t.Errorf("%s: compiler ABI %d (present: %v), executor ABI %d", typ, abi, ok, info.ABI)
		}
	}
	if len(compiler.BuiltinABI) != len(builtin.Types()) {
		t.Errorf("compiler.BuiltinABI has %d types, the executor %d", len(compiler.BuiltinABI), len(builtin.Types()))
	}
}
