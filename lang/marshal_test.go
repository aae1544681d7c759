package lang

import (
	"testing"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
)

// TestMarshalFailsWhereValidateDoes backs decodeStage's shortcut: it marshals a
// stage's options checked against their schema and runs Validate only when
// that fails. Were there options MarshalJSON accepts and Validate(Concrete)
// refuses, the shortcut would let them through.
func TestMarshalFailsWhereValidateDoes(t *testing.T) {
	ctx := cuecontext.New()
	refused := 0
	schema := ctx.CompileString(`#options: {
		path!:  string & =~"^/"
		mode:   *"0644" | string
		size?:  int & >0
		items:  [...{name: string}]
		_check: true
	}`).LookupPath(cue.ParsePath("#options"))
	if err := schema.Err(); err != nil {
		t.Fatal(err)
	}
	for _, opts := range []string{
		`{path: "/a", items: []}`,
		`{path: "/a", items: [], mode: "0755"}`,
		`{path: "/a", items: [], size: 3}`,
		`{path: "a", items: []}`,
		`{items: []}`,
		`{path: "/a"}`,
		`{path: "/a", items: [], size: 0}`,
		`{path: "/a", items: [], size: int}`,
		`{path: "/a", items: [{}]}`,
		`{path: "/a", items: [{name: 1}]}`,
		`{path: "/a", items: [], extra: 1}`,
		`{path: "/a", items: [], mode: string}`,
		`{path: "/a", items: [], mode: "0644" | "0600"}`,
		`{path: "/a" | "/b", items: []}`,
		`{path: "/a", items: [...]}`,
		`{path: "/a", items: [], _x: 1 & 2}`,
		`{path: "/a", items: [], #d: 1 & 2}`,
		`close({path: "/a"}) & {items: []}`,
	} {
		v := schema.Unify(ctx.CompileString(opts))
		verr := v.Validate(cue.Concrete(true))
		_, merr := v.MarshalJSON()
		if verr != nil && merr == nil {
			t.Errorf("%s: MarshalJSON accepts what Validate refuses: %v", opts, verr)
		}
		if verr != nil {
			refused++
		}
	}
	if refused < 10 {
		t.Errorf("Validate refused %d of the cases, want at least 10: the cases no longer test the claim", refused)
	}
}
