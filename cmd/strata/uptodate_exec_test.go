package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/strata-build/strata/executor"
)

const upToDateWS = `package test

images: a: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/etc/a": content: "a\n"}]
	outputs: [{type: "tar"}, {type: "tree"}]
}
images: b: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/etc/b": content: "b\n"}]
	outputs: [{type: "tar"}]
}
`

// buildRecords returns the inode of every build record in the store cache.
func buildRecords(t *testing.T, cache string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	entries, _ := os.ReadDir(filepath.Join(cache, "state", "builds"))
	for _, e := range entries {
		info, err := e.Info()
		must(t, err)
		out[e.Name()] = info.Sys().(*syscall.Stat_t).Ino
	}
	return out
}

// eventKey is an event without its time, elapsed time and position in the
// stream (a walk's order varies).
type eventKey struct {
	Kind                 executor.EventKind
	Node, Name, NodeKind string
	Type, Error          string
	Total                int
}

func eventKeys(evs []executor.Event) []eventKey {
	var out []eventKey
	for _, ev := range evs {
		out = append(out, eventKey{ev.Kind, ev.Node, ev.Name, ev.NodeKind, ev.Type, ev.Error, ev.Total})
	}
	slices.SortFunc(out, func(a, b eventKey) int {
		return strings.Compare(string(a.Kind)+a.Node, string(b.Kind)+b.Node)
	})
	return out
}

func zeroElapsed(r executor.BuildResult) executor.BuildResult {
	for _, n := range r.Nodes {
		n.Elapsed = 0
	}
	return r
}

// TestUpToDateExec: a build whose plan, store and exports are as the last
// successful one left them is answered from its record (no plan decoded, no
// node looked up) with exactly what a build that finds every node in the
// cache reports; anything changed since sends it down the usual path.
func TestUpToDateExec(t *testing.T) {
	ws := writeWS(t, upToDateWS)
	cache := t.TempDir()
	if jb := buildJSON(t, ws, cache); jb.code != 0 {
		t.Fatalf("build: exit %d: %s\n%s", jb.code, jb.errText, jb.stderr)
	}
	recs := buildRecords(t, cache)
	if len(recs) != 1 {
		t.Fatalf("build records after a build: %v, want one", recs)
	}
	answered := func() bool {
		r := runCLI(t, ws, cache, "-v", "build")
		if r.code != 0 {
			t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
		}
		return strings.Contains(r.stderr, "up to date: the last build's record holds")
	}

	// The reference: the same build with no record, which looks every node
	// up; then the one the record answers.
	must(t, os.RemoveAll(filepath.Join(cache, "state", "builds")))
	full := buildJSON(t, ws, cache)
	before := buildRecords(t, cache)
	fast := buildJSON(t, ws, cache)
	if after := buildRecords(t, cache); !reflect.DeepEqual(before, after) || len(after) != 1 {
		t.Fatalf("the second build was not answered from the record: %v then %v", before, after)
	}
	if full.code != 0 || fast.code != 0 || !full.ok || !fast.ok {
		t.Fatalf("builds: %d %d\n%s\n%s", full.code, fast.code, full.stderr, fast.stderr)
	}
	if full.result.Built != 0 || full.result.Cached != len(full.result.Nodes) {
		t.Fatalf("reference build ran nodes: %+v", full.result)
	}
	if a, b := zeroElapsed(full.result), zeroElapsed(fast.result); !reflect.DeepEqual(a, b) {
		t.Errorf("answered from the record:\n%+v\nlooked up:\n%+v", b, a)
	}
	if a, b := eventKeys(full.events), eventKeys(fast.events); !reflect.DeepEqual(a, b) {
		t.Errorf("events answered from the record:\n%v\nlooked up:\n%v", b, a)
	}
	plainFull := func() cliResult {
		must(t, os.RemoveAll(filepath.Join(cache, "state", "builds")))
		return runCLI(t, ws, cache, "build")
	}()
	plainFast := runCLI(t, ws, cache, "build")
	if plainFull.stdout != plainFast.stdout {
		t.Errorf("stdout answered from the record:\n%s\nlooked up:\n%s", plainFast.stdout, plainFull.stdout)
	}
	summary := func(s string) string { // the lines without progress counts, the last without its time
		lines := strings.Split(strings.TrimSpace(s), "\n")
		for i, l := range lines {
			if _, rest, ok := strings.Cut(l, "] "); ok && strings.HasPrefix(l, "[") {
				lines[i] = rest
			}
		}
		slices.Sort(lines[:len(lines)-1])
		last := lines[len(lines)-1]
		lines[len(lines)-1] = last[:strings.LastIndex(last, " in ")]
		return strings.Join(lines, "\n")
	}
	if a, b := summary(plainFull.stderr), summary(plainFast.stderr); a != b {
		t.Errorf("stderr answered from the record:\n%s\nlooked up:\n%s", b, a)
	}
	if !answered() {
		t.Fatal("an unchanged build was not answered from its record")
	}

	tar := filepath.Join(ws, "out", "a", "a.tar")
	want := fileSHA(t, tar)
	edits := []struct {
		name string
		edit func()
	}{
		{"an exported file edited", func() {
			f, err := os.OpenFile(tar, os.O_APPEND|os.O_WRONLY, 0)
			must(t, err)
			f.WriteString("edit")
			f.Close()
		}},
		{"an exported tree's file removed", func() { must(t, os.Remove(filepath.Join(ws, "out", "a", "a.tree", "etc", "a"))) }},
		{"a file added beside the exports", func() { must(t, os.WriteFile(filepath.Join(ws, "out", "b", "stray"), nil, 0o644)) }},
		{"an image's exports removed", func() { must(t, os.RemoveAll(filepath.Join(ws, "out", "b"))) }},
		{"an action record removed", func() {
			entries, err := os.ReadDir(filepath.Join(cache, "actions"))
			must(t, err)
			must(t, os.Remove(filepath.Join(cache, "actions", entries[0].Name())))
		}},
		{"the record damaged", func() {
			for name := range buildRecords(t, cache) {
				must(t, os.WriteFile(filepath.Join(cache, "state", "builds", name), []byte(`{"format":1,"plan_key":`), 0o600))
			}
		}},
		{"the workspace edited", func() {
			must(t, os.WriteFile(filepath.Join(ws, "ws.cue"), []byte(upToDateWS+"\n// edited\n"), 0o644))
		}},
	}
	for _, e := range edits {
		e.edit()
		if answered() {
			t.Fatalf("%s: the build was answered from the record", e.name)
		}
		if got := fileSHA(t, tar); got != want {
			t.Fatalf("%s: %s is %s after the build, want %s", e.name, tar, got, want)
		}
		for _, p := range []string{filepath.Join(ws, "out", "a", "a.tree", "etc", "a"), filepath.Join(ws, "out", "b", "b.tar")} {
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("%s: %v after the build", e.name, err)
			}
		}
		if _, err := os.Stat(filepath.Join(ws, "out", "b", "stray")); err == nil {
			t.Fatalf("%s: a stray file survived the build", e.name)
		}
		if !answered() {
			t.Fatalf("%s: the build after was not answered from the record", e.name)
		}
	}

	// Other targets or another out directory are other builds.
	if r := runCLI(t, ws, cache, "-v", "build", "a"); r.code != 0 || strings.Contains(r.stderr, "up to date") {
		t.Fatalf("build a: exit %d, answered from the whole build's record:\n%s", r.code, r.stderr)
	}
	other := t.TempDir()
	if r := runCLI(t, ws, cache, "-v", "build", "--out-dir", other); r.code != 0 || strings.Contains(r.stderr, "up to date") {
		t.Fatalf("build --out-dir: exit %d, answered from the record of out/:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(other, "b", "b.tar")); err != nil {
		t.Fatal(err)
	}
	if !answered() {
		t.Fatal("the workspace's own build lost its record to the others")
	}
}

const pathSourceWS = `package test

sources: d: path: "data.txt"

images: b: {
	version: "1"
	stages: [{
		type: "strata.run"
		inputs: d: "sources.d"
		options: command: ["/bin/sh", "-c", "grep -qv bad /run/strata/inputs/d && cp /run/strata/inputs/d /run/strata/tree/data.txt"]
	}]
	outputs: [{type: "tar"}]
}
`

// tarFile returns the content of name in the tar archive at p.
func tarFile(t *testing.T, p, name string) string {
	t.Helper()
	out, err := exec.Command("tar", "-xOf", p, name).Output()
	if err != nil {
		t.Fatalf("tar -xOf %s %s: %v", p, name, err)
	}
	return string(out)
}

// TestUpToDatePlanChangesExec: a record answers only the plan it was
// written for, byte for byte. A path source's content is not part of the
// compile-cache key (a hit hashes it again, and a change compiles a plan
// stored under the same key), so a record keyed by the compile alone would
// answer for a plan that builds other bytes, and would turn a build that
// fails into one that passes (found in review). Nor does a build whose nodes
// have requirements leave a record: the host may lose them.
func TestUpToDatePlanChangesExec(t *testing.T) {
	ws := writeWS(t, pathSourceWS)
	cache := t.TempDir()
	data := filepath.Join(ws, "data.txt")
	tar := filepath.Join(ws, "out", "b", "b.tar")
	build := func(args ...string) cliResult {
		return runCLI(t, ws, cache, append([]string{"-v", "build"}, args...)...)
	}
	fromRecord := func(r cliResult) bool { return strings.Contains(r.stderr, "up to date") }

	must(t, os.WriteFile(data, []byte("v1\n"), 0o644))
	if r := build(); r.code != 0 {
		t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
	}
	if r := build(); r.code != 0 || !fromRecord(r) {
		t.Fatalf("unchanged build: exit %d, not answered from its record\n%s", r.code, r.stderr)
	}

	// The compile cache refreshed by strata compile, then a build.
	must(t, os.WriteFile(data, []byte("v2\n"), 0o644))
	if r := runCLI(t, ws, cache, "compile", "-o", filepath.Join(t.TempDir(), "plan.json")); r.code != 0 {
		t.Fatalf("compile: exit %d\n%s", r.code, r.stderr)
	}
	if r := build(); r.code != 0 || fromRecord(r) {
		t.Fatalf("build after a path source changed: exit %d, answered from the record\n%s", r.code, r.stderr)
	}
	if got := tarFile(t, tar, "data.txt"); got != "v2\n" {
		t.Fatalf("out/b/b.tar holds %q, want v2", got)
	}

	// A build that fails, then the same build again.
	must(t, os.WriteFile(data, []byte("bad\n"), 0o644))
	for i := range 2 {
		if r := build(); r.code == 0 || fromRecord(r) {
			t.Fatalf("build %d of a failing source: exit %d\n%s", i+1, r.code, r.stderr)
		}
	}

	// Another out directory built the new content; the workspace's own
	// out/ still holds the old.
	must(t, os.WriteFile(data, []byte("v4\n"), 0o644))
	if r := build("--out-dir", t.TempDir()); r.code != 0 {
		t.Fatalf("build --out-dir: exit %d\n%s", r.code, r.stderr)
	}
	if r := build(); r.code != 0 || fromRecord(r) {
		t.Fatalf("build of out/: exit %d, answered from a record of other content\n%s", r.code, r.stderr)
	}
	if got := tarFile(t, tar, "data.txt"); got != "v4\n" {
		t.Fatalf("out/b/b.tar holds %q, want v4", got)
	}

	// Requirements are checked by every build.
	must(t, os.WriteFile(filepath.Join(ws, "ws.cue"), []byte(strings.Replace(pathSourceWS, `version: "1"`,
		`version: "1"`+"\n\trequires: arch: \""+runtime.GOARCH+"\"", 1)), 0o644))
	for i := range 2 {
		if r := build(); r.code != 0 || fromRecord(r) {
			t.Fatalf("build %d of an image with requirements: exit %d, answered from a record\n%s", i+1, r.code, r.stderr)
		}
	}
}

const embedWS = `@extern(embed)

package test

_data: _ @embed(file="sub/data.json")

images: e: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/etc/x": content: _data.x}]
	outputs: [{type: "tar"}]
}
`

// TestEmbeddedFileEditedExec: a file the spec embeds is a compile input:
// editing it rebuilds (the compile cache keyed only the spec's own files,
// and answered with the old content; found in review).
func TestEmbeddedFileEditedExec(t *testing.T) {
	ws := writeWS(t, embedWS)
	cache := t.TempDir()
	data := filepath.Join(ws, "sub", "data.json")
	must(t, os.MkdirAll(filepath.Dir(data), 0o755))
	tar := filepath.Join(ws, "out", "e", "e.tar")
	for _, x := range []string{"one", "two"} {
		must(t, os.WriteFile(data, []byte(`{"x":"`+x+`\n"}`), 0o644))
		if r := runCLI(t, ws, cache, "build"); r.code != 0 {
			t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
		}
		if got := tarFile(t, tar, "etc/x"); got != x+"\n" {
			t.Fatalf("after writing %q the export holds %q", x, got)
		}
	}
}

// TestHostRootWarningOnHitExec: a build that compiles, one that hits the
// compile cache and one answered from its record warn alike about images
// building in the host's /usr, though the cache keeps only the first names.
func TestHostRootWarningOnHitExec(t *testing.T) {
	var src strings.Builder
	src.WriteString("package test\n")
	for _, name := range []string{"f", "e", "d", "c", "b", "a"} {
		fmt.Fprintf(&src, "images: %s: {version: \"1\", stages: [{type: \"strata.files\", options: files: \"/%s\": content: \"%s\"}]}\n", name, name, name)
	}
	ws := writeWS(t, src.String())
	cache := t.TempDir()
	warning := func() string {
		r := runCLI(t, ws, cache, "build")
		if r.code != 0 {
			t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
		}
		for _, l := range strings.Split(r.stderr, "\n") {
			if strings.HasPrefix(l, "warning: ") {
				return l
			}
		}
		t.Fatalf("no warning:\n%s", r.stderr)
		return ""
	}
	want := `warning: ws.cue:7:9: build root "host" is not hermetic: images.a, images.b, images.c and 3 more build in the host's /usr, so their keys hold a host fingerprint`
	compiled := warning()
	fromRecord := warning()
	must(t, os.RemoveAll(filepath.Join(cache, "state", "builds")))
	hit := warning()
	for what, got := range map[string]string{"compiling": compiled, "answered from the record": fromRecord, "a cache hit": hit} {
		if got != want {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}
}

// TestUpToDateRootlessExec: a build without root is answered from its record
// too (its owners come from records, not the files), and an output edited
// since is put back, byte for byte, by the build that follows.
func TestUpToDateRootlessExec(t *testing.T) {
	u := newRootless(t, writeWS(t, ownersWS))
	build := func() cliResult {
		r := u.run(t, "-v", "build")
		if r.code != 0 {
			t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
		}
		return r
	}
	fromRecord := func(r cliResult) bool { return strings.Contains(r.stderr, "up to date") }
	first := build()
	tar := filepath.Join(u.ws, "out", "a", "a.tar")
	want := fileSHA(t, tar)
	if r := build(); !fromRecord(r) || r.stdout != first.stdout {
		t.Fatalf("an unchanged build without root: answered from the record %t, stdout\n%s\nwant\n%s", fromRecord(r), r.stdout, first.stdout)
	}
	f, err := os.OpenFile(tar, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	f.WriteString("edit")
	f.Close()
	if r := build(); fromRecord(r) {
		t.Fatal("a build after an output was edited was answered from the record")
	}
	if got := fileSHA(t, tar); got != want {
		t.Fatalf("%s is %s after the rebuild, want %s", tar, got, want)
	}
	if r := build(); !fromRecord(r) {
		t.Fatal("the build after the rebuild was not answered from the record")
	}
}
