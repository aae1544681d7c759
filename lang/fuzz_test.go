package lang_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lang"
)

// fuzzTimeout bounds one load. CUE's evaluator does not watch the context (Load
// checks it only between phases), so the load runs in a goroutine and the
// iteration fails when it does not return in time; the goroutine is left behind.
const fuzzTimeout = 5 * time.Second

// fuzzSeeds returns the .cue files of the examples and the bad cases, plus inputs
// modelled on CUE's evaluator issues with deep recursion (cue-lang/cue#4231) and
// exponential disjunctions (cue-lang/cue#2109), kept small enough not to hang.
func fuzzSeeds(t testing.TB) []string {
	var seeds []string
	for _, pat := range []string{"../examples/*/*.cue"} {
		files, _ := filepath.Glob(pat)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			seeds = append(seeds, string(b))
		}
	}
	bad, _ := filepath.Glob("testdata/bad/*.txtar")
	for _, f := range bad {
		ar, err := parseArchiveFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, af := range ar.Files {
			if strings.HasSuffix(af.Name, ".cue") && !strings.HasPrefix(af.Name, "cue.mod/") {
				seeds = append(seeds, string(af.Data))
			}
		}
	}
	// Deep nesting: structs, lists and a recursive definition bounded by a depth.
	deep := 60
	seeds = append(seeds,
		"package p\n\nimages: x: version: \"1\"\nimages: x: stages: []\nimages: x: annotations: a: "+strings.Repeat("(", deep)+"\"v\""+strings.Repeat(")", deep)+"\n",
		"package p\n\nx: "+strings.Repeat("{a: ", deep)+"1"+strings.Repeat("}", deep)+"\n",
		"package p\n\nx: "+strings.Repeat("[", deep)+strings.Repeat("]", deep)+"\n",
		"package p\n\n#T: {n: int, next?: #T}\nx: #T & {n: 1, next: {n: 2, next: {n: 3}}}\nimages: a: {version: \"1\", stages: []}\n",
		// A structural cycle and a reference cycle: errors, not hangs.
		"package p\n\na: b: a\n",
		"package p\n\na: b\nb: a\nimages: x: {version: a, stages: []}\n",
		"package p\n\n#L: {v: int, n: #L | null}\nl: #L & {v: 1, n: {v: 2, n: null}}\n",
		// A self-referential disjunction wrapped in a struct.
		"package p\n\nout: (#T & {t: \"r1\"}).out\n#T: {\n\t{t!: \"leaf\", out: {}} |\n\t{t!: \"r1\", out: next: (#T & {t: \"leaf\"}).out}\n}\n",
	)
	// Exponential disjunctions: a product of n binary disjunctions.
	var b strings.Builder
	b.WriteString("package p\n\n#D: {a: int} | {b: int}\nx: ")
	for i := 0; i < 8; i++ {
		if i > 0 {
			b.WriteString(" & ")
		}
		b.WriteString("(#D | {c: string})")
	}
	b.WriteString("\nx: a: 1\n")
	seeds = append(seeds, b.String())
	var arch strings.Builder
	arch.WriteString("package p\n\nimages: x: {version: \"1\", stages: []}\nimages: x: platform: arch: ")
	for i := 0; i < 6; i++ {
		if i > 0 {
			arch.WriteString(" & ")
		}
		arch.WriteString(`("amd64" | "arm64" | "arm")`)
	}
	arch.WriteString("\n")
	seeds = append(seeds, arch.String())
	return seeds
}

func FuzzLoad(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		dir := t.TempDir()
		writeWorkspace(t, dir, src)
		_, err := loadBounded(t, dir)
		if err == nil {
			return
		}
		if errors.Is(err, lang.ErrInvalid) {
			var es lang.Errors
			if !errors.As(err, &es) {
				t.Fatalf("ErrInvalid without lang.Errors: %T %v", err, err)
			}
			checkErrors(t, err, map[string]bool{"main.cue": true})
			return
		}
		// Nothing else is legitimate: the workspace exists and is readable, and the
		// context is not cancelled before fuzzTimeout.
		t.Fatalf("error that is not ErrInvalid: %T %v\ninput:\n%s", err, err, src)
	})
}

func writeWorkspace(t testing.TB, dir, src string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "cue.mod"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cue.mod", "module.cue"), []byte(moduleCUE), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.cue"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

type loadResult struct {
	ws    *lang.Workspace
	err   error
	panic string
}

// loadBounded runs lang.Load with a deadline and fails the test when it panics or
// does not return in time.
func loadBounded(t testing.TB, dir string) (*lang.Workspace, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzTimeout)
	defer cancel()
	done := make(chan loadResult, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- loadResult{panic: fmt.Sprintf("%v\n%s", r, debug.Stack())}
			}
		}()
		ws, err := lang.Load(ctx, dir)
		done <- loadResult{ws: ws, err: err}
	}()
	select {
	case r := <-done:
		if r.panic != "" {
			t.Fatalf("lang.Load panicked: %s", r.panic)
		}
		return r.ws, r.err
	case <-time.After(fuzzTimeout + time.Second):
		t.Fatalf("lang.Load did not return within %v", fuzzTimeout)
		return nil, nil
	}
}
