package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestImportRules: data flows one way (lang → compiler → executor → registry)
// and heavy dependencies stay in the one package that needs them:
//   - only lang imports cuelang.org/go, and only registry oras-go;
//   - the registry depends on compiler/plan and the executor, never on the
//     compiler, lang or cue;
//   - the executor depends on compiler/plan, never on compiler or lang (it
//     takes a plan, never CUE);
//   - lang depends on no other strata package but cue; compiler not on the
//     executor or registry.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "github.com/strata-build/strata/...").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	const mod = "github.com/strata-build/strata/"
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := map[string]bool{}
	defer func() {
		for _, want := range []string{"lang", "compiler", "compiler/plan", "executor", "executor/store", "cue", "registry"} {
			if !seen[want] {
				t.Errorf("go list did not list %s", want)
			}
		}
	}()
	for {
		var p struct {
			ImportPath string
			Imports    []string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkg := strings.TrimPrefix(p.ImportPath, mod)
		seen[pkg] = true
		under := func(prefix string) bool { return pkg == prefix || strings.HasPrefix(pkg, prefix+"/") }
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, "cuelang.org/go") && !under("lang") {
				t.Errorf("%s imports %s: only lang may", pkg, imp)
			}
			// bench/ holds the plain oras-go client strata is measured against.
			if strings.HasPrefix(imp, "oras.land/oras-go") && !under("registry") && !under("bench") {
				t.Errorf("%s imports %s: only registry may", pkg, imp)
			}
		}
		for _, dep := range p.Deps {
			d, ours := strings.CutPrefix(dep, mod)
			if !ours {
				continue
			}
			depUnder := func(prefix string) bool { return d == prefix || strings.HasPrefix(d, prefix+"/") }
			switch {
			case under("executor") && (d == "compiler" || depUnder("lang") || depUnder("registry") || depUnder("cue")):
				t.Errorf("%s depends on %s: the executor takes a plan (compiler/plan), never the compiler or CUE", pkg, d)
			case under("lang") && !depUnder("cue") && !depUnder("lang"):
				t.Errorf("%s depends on %s: lang depends only on cue", pkg, d)
			case under("compiler") && (depUnder("executor") || depUnder("registry")):
				t.Errorf("%s depends on %s: the compiler comes before the executor", pkg, d)
			case under("registry") && (d == "compiler" || depUnder("lang") || depUnder("cue")):
				t.Errorf("%s depends on %s: the registry takes a plan (compiler/plan) and results, never the compiler or CUE", pkg, d)
			case under("cue") && !depUnder("cue"):
				t.Errorf("%s depends on %s: the schema package depends on nothing", pkg, d)
			}
		}
	}
}
