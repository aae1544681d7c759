package executor

import (
	"testing"

	"github.com/strata-build/strata/compiler/plan"
)

// TestBuiltinMessage: a built-in stage's failure is reported with the reason
// its log ends with, not only its exit status; other stages' logs are theirs.
func TestBuiltinMessage(t *testing.T) {
	for _, c := range []struct{ typ, tail, want string }{
		{"strata.copy", "copying\nstrata: strata.copy: src: no such file\n", "strata.copy: src: no such file"},
		{"strata.copy", "strata: strata.copy: a\nmore output\n", ""},
		{"strata.run", "strata: looks like ours\n", ""},
		{"strata.files", "", ""},
	} {
		if got := builtinMessage(&plan.Node{Type: c.typ}, c.tail); got != c.want {
			t.Errorf("builtinMessage(%s, %q) = %q, want %q", c.typ, c.tail, got, c.want)
		}
	}
}
