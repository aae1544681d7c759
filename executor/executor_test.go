package executor

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-build/strata/compiler/plan"
)

func TestDiffJSON(t *testing.T) {
	old := json.RawMessage(`{"options":{"hostname":"a","n":[1,2]},"inputs":{"tree":"x"},"gone":true}`)
	new := json.RawMessage(`{"options":{"hostname":"b","n":[1,3]},"inputs":{"tree":"x"},"added":1}`)
	got, err := DiffJSON(old, new)
	if err != nil {
		t.Fatal(err)
	}
	want := []Diff{{"added", "", "1"}, {"gone", "true", ""}, {"options.hostname", `"a"`, `"b"`}, {"options.n[1]", "2", "3"}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("diff %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestResolveTargets(t *testing.T) {
	p := &plan.Plan{
		Nodes: []*plan.Node{
			{ID: "s", Name: "sources.x", Kind: plan.KindSource},
			{ID: "a0", Name: "images.a.stages[0]", Kind: plan.KindStage, Deps: []string{"s"}},
			{ID: "ao", Name: "images.a.outputs[0]", Kind: plan.KindOutput, Deps: []string{"a0"}},
			{ID: "b0", Name: "images.b.stages[0]", Kind: plan.KindStage},
		},
		Images: map[string]*plan.Image{"a": {Name: "a", Tree: "a0", Outputs: []string{"ao"}}, "b": {Name: "b", Tree: "b0"}},
	}
	for _, tc := range []struct {
		targets []string
		want    string
	}{
		{nil, "s,a0,ao,b0"},
		{[]string{"a"}, "s,a0,ao"},
		{[]string{"images.b"}, "b0"},
		{[]string{"images.a.stages[0]"}, "s,a0"},
	} {
		got, err := ResolveTargets(p, tc.targets)
		if err != nil || strings.Join(got, ",") != tc.want {
			t.Errorf("%v: got %v %v, want %s", tc.targets, got, err, tc.want)
		}
	}
	if _, err := ResolveTargets(p, []string{"nope"}); !errors.Is(err, ErrUnknownTarget) {
		t.Errorf("unknown target: %v", err)
	}
}

func TestLogWriterLines(t *testing.T) {
	var lines []string
	lw, err := newLogWriter(filepath.Join(t.TempDir(), "log"), func(s string) { lines = append(lines, s) })
	if err != nil {
		t.Fatal(err)
	}
	defer lw.f.Close()
	for _, chunk := range []string{"a\nb", "c\n", "\n", "tail"} {
		if _, err := lw.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	lw.line(lw.partial)
	if got := strings.Join(lines, "|"); got != "a|bc||tail" {
		t.Errorf("lines %q", got)
	}
	b, _ := os.ReadFile(lw.f.Name())
	if string(b) != "a\nbc\n\ntail" {
		t.Errorf("log file %q", b)
	}
}

func TestNodeErrorMessage(t *testing.T) {
	e := &NodeError{Node: "images.x.stages[1]", Origin: "x.cue:3:4", ExitCode: 3, Log: "one\ntwo\n"}
	msg := e.Error()
	for _, want := range []string{"images.x.stages[1]", "x.cue:3:4", "exit status 3", "| one", "| two"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
}
