package compiler_test

import (
	"context"
	"testing"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/lang"
)

// TestPathSourceMissing: a path source that is not there is an error at the
// source naming the path, in words (not os.Root's "statat").
func TestPathSourceMissing(t *testing.T) {
	dir := writeWorkspace(t, t.TempDir(), "package keys\nsources: s: path: \"deps/pkg.deb\"\n")
	ws, err := lang.Load(context.Background(), dir)
	must(t, err)
	_, err = compiler.Compile(context.Background(), ws, compiler.Options{Host: testHost})
	want := `keys.cue:2:10: sources.s.path: source path "deps/pkg.deb": file does not exist in the workspace`
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
}
