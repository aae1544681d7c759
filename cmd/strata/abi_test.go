package main

import (
	"context"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/builtin"
	"github.com/strata-build/strata/executor/output"
	"github.com/strata-build/strata/lang"
)

// TestExtensionTablesAgree: each extension kind is declared once, in
// compiler/plan (name, ABI, media type), and the CUE schema and the executor's
// implementations list exactly the same names. A stage type or output format
// added in one place only fails here: the schema would accept what no
// implementation runs, or keys would be computed for an ABI nobody declared.
func TestExtensionTablesAgree(t *testing.T) {
	var table []string
	for _, b := range plan.BuiltinStages {
		table = append(table, b.Name)
		if b.ABI < 1 {
			t.Errorf("%s: ABI %d", b.Name, b.ABI)
		}
	}
	sort.Strings(table)
	ws, err := lang.Builtins(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var schemaTypes []string
	for name := range ws.StageModules {
		schemaTypes = append(schemaTypes, name)
	}
	sort.Strings(schemaTypes)
	if d := cmp.Diff(table, schemaTypes); d != "" {
		t.Errorf("plan.BuiltinStages vs schema #Builtin (-table +schema):\n%s", d)
	}
	if d := cmp.Diff(table, builtin.Types()); d != "" {
		t.Errorf("plan.BuiltinStages vs executor/builtin (-table +executor):\n%s", d)
	}

	table = nil
	for _, f := range plan.OutputFormats {
		table = append(table, f.Name)
		if f.ABI < 1 || f.MediaType == "" {
			t.Errorf("%s: ABI %d, media type %q", f.Name, f.ABI, f.MediaType)
		}
	}
	sort.Strings(table)
	schemaFormats, err := lang.OutputTypes()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(table, schemaFormats); d != "" {
		t.Errorf("plan.OutputFormats vs schema #OutputType (-table +schema):\n%s", d)
	}
	var impl []string
	for _, f := range output.Formats() {
		impl = append(impl, string(f))
	}
	sort.Strings(impl)
	if d := cmp.Diff(table, impl); d != "" {
		t.Errorf("plan.OutputFormats vs executor/output.Formats (-table +executor):\n%s", d)
	}
}
