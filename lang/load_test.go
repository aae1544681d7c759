package lang_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/lang"
)

// update rewrites the want sections of testdata/bad from the current output.
// Review the diff by hand before keeping it.
var update = os.Getenv("STRATA_UPDATE") == "1"

const moduleCUE = `module: "example.com/bad"
language: version: "v0.17.1"
`

// extract writes the archive's files (all but want) into a new temp dir.
func extract(t testing.TB, ar *archive) (dir string, user map[string]bool, want []string) {
	t.Helper()
	dir = t.TempDir()
	user = map[string]bool{}
	for _, f := range ar.Files {
		if f.Name == "want" {
			for _, line := range strings.Split(string(f.Data), "\n") {
				if strings.TrimSpace(line) != "" {
					want = append(want, line)
				}
			}
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(f.Name, "cue.mod/") {
			user[f.Name] = true
		}
	}
	return dir, user, want
}

// load calls lang.Load with a deadline, turning a panic into a test failure.
func load(t testing.TB, dir string) (ws *lang.Workspace, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("lang.Load panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return lang.Load(ctx, dir)
}

// checkErrors asserts what holds for every error lang returns: a position in one
// of the user's files with a line and column, and a one-line message.
func checkErrors(t testing.TB, err error, user map[string]bool) lang.Errors {
	t.Helper()
	var es lang.Errors
	if !errors.As(err, &es) {
		t.Fatalf("error is %T, not lang.Errors: %v", err, err)
	}
	if len(es) == 0 {
		t.Fatalf("empty lang.Errors")
	}
	for _, e := range es {
		f := e.Pos.File
		if strings.HasPrefix(f, "cue.mod/") || strings.Contains(f, "strata.build/strata") || !user[f] {
			t.Errorf("error not at a user file (%v): %s", sortedSet(user), e)
		}
		if e.Pos.Line <= 0 || e.Pos.Col <= 0 {
			t.Errorf("error without line:col: %s", e)
		}
		if strings.Contains(e.Msg, "\n") || strings.Contains(e.Path, "\n") {
			t.Errorf("multi-line error: %q", e.Error())
		}
		if e.Msg == "" {
			t.Errorf("empty message: %s", e)
		}
	}
	return es
}

func sortedSet(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestLoadBad(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("want at least 30 bad cases, have %d", len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txtar")
		t.Run(name, func(t *testing.T) {
			ar, err := parseArchiveFile(file)
			if err != nil {
				t.Fatal(err)
			}
			dir, user, want := extract(t, ar)
			if b, err := os.ReadFile(filepath.Join(dir, "cue.mod", "module.cue")); err != nil || string(b) != moduleCUE {
				t.Fatalf("%s: cue.mod/module.cue must be exactly %q", file, moduleCUE)
			}
			_, err = load(t, dir)
			if err == nil {
				t.Fatalf("Load succeeded; want errors")
			}
			if !errors.Is(err, lang.ErrInvalid) {
				t.Fatalf("error does not match ErrInvalid: %v", err)
			}
			es := checkErrors(t, err, user)
			got := strings.Split(err.Error(), "\n")
			if len(got) != len(es) {
				t.Errorf("%d error lines for %d errors", len(got), len(es))
			}
			if update {
				writeWant(t, file, ar, got)
				return
			}
			if len(want) == 0 {
				t.Fatalf("no want section; got:\n%s", err)
			}
			if len(got) != len(want) {
				t.Errorf("got %d error lines, want %d:\n%s", len(got), len(want), err)
			}
			for i := 0; i < len(got) && i < len(want); i++ {
				if !strings.Contains(got[i], want[i]) {
					t.Errorf("error line %d:\n got: %s\nwant: …%s…", i+1, got[i], want[i])
				}
			}
		})
	}
}

func writeWant(t *testing.T, file string, ar *archive, got []string) {
	t.Helper()
	data := []byte(strings.Join(got, "\n") + "\n")
	found := false
	for i := range ar.Files {
		if ar.Files[i].Name == "want" {
			ar.Files[i].Data, found = data, true
		}
	}
	if !found {
		ar.Files = append(ar.Files, archiveFile{Name: "want", Data: data})
	}
	if err := os.WriteFile(file, formatArchive(ar), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadNotWorkspace(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.cue"), []byte("package bad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := load(t, dir)
	if !errors.Is(err, lang.ErrNotWorkspace) {
		t.Fatalf("want ErrNotWorkspace, got %v", err)
	}
	if errors.Is(err, lang.ErrInvalid) {
		t.Fatalf("a directory without cue.mod is not an invalid workspace: %v", err)
	}
}

func TestLoadMinimal(t *testing.T) {
	ws, err := load(t, "../examples/minimal")
	if err != nil {
		t.Fatal(err)
	}
	img := ws.Images["minimal"]
	if img == nil {
		t.Fatalf("no image minimal; have %v", keys(ws.Images))
	}
	type summary struct {
		Version  string
		Platform lang.Platform
		Devices  []string
		Default  bool
		Types    []string
		Outputs  []string
		Pos      []string
	}
	got := summary{Version: img.Version, Platform: img.Platform, Devices: img.DeviceTypes, Default: img.Default}
	for _, st := range img.Stages {
		got.Types = append(got.Types, st.Type)
		got.Pos = append(got.Pos, st.Pos.String())
	}
	for _, o := range img.Outputs {
		got.Outputs = append(got.Outputs, o.Name)
	}
	want := summary{
		Version:  "1.0.0",
		Platform: lang.Platform{OS: "linux", Arch: "amd64"},
		Devices:  []string{"qemu/x86_64"},
		Default:  true,
		Types:    []string{"strata.busybox", "strata.files", "strata.hostname", "strata.users"},
		Outputs:  []string{"minimal.tar", "minimal.squashfs"},
		Pos:      []string{"minimal.cue:17:3", "minimal.cue:18:3", "minimal.cue:42:3", "minimal.cue:43:3"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("minimal (-want +got):\n%s", d)
	}
	// Defaults of the built-in schema are applied.
	var users struct {
		Users map[string]struct {
			UID   int    `json:"uid"`
			GID   int    `json:"gid"`
			Home  string `json:"home"`
			Shell string `json:"shell"`
		} `json:"users"`
	}
	if err := json.Unmarshal(img.Stages[3].Options, &users); err != nil {
		t.Fatal(err)
	}
	admin := users.Users["admin"]
	if admin.GID != 1000 || admin.Home != "/home/admin" || admin.Shell != "/bin/sh" {
		t.Errorf("strata.users defaults not applied: %+v", admin)
	}
}

func TestLoadFleet(t *testing.T) {
	ws, err := load(t, "../examples/fleet")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"base", "fleet-x86-gateway", "fleet-x86-nuc", "fleet-x86-thin-client", "host-tools"}, keys(ws.Images)); d != "" {
		t.Errorf("images (-want +got):\n%s", d)
	}
	var instances []lang.Instance
	for _, name := range keys(ws.Images) {
		if in := ws.Images[name].Instance; in != nil {
			instances = append(instances, *in)
		}
	}
	instPos := lang.Pos{File: "fleet.cue", Line: 42, Col: 11}
	// The records are computed: their position is the resource's.
	recPos := lang.Pos{File: "devices.cue", Line: 22, Col: 12}
	wantInst := []lang.Instance{
		{Template: "per-device-type", Resource: "device-types", Record: 5, RecordPos: recPos, Pos: instPos},
		{Template: "per-device-type", Resource: "device-types", Record: 2, RecordPos: recPos, Pos: instPos},
		{Template: "per-device-type", Resource: "device-types", Record: 3, RecordPos: recPos, Pos: instPos},
	}
	if d := cmp.Diff(wantInst, instances); d != "" {
		t.Errorf("instances (-want +got):\n%s", d)
	}

	tmpl := ws.Templates["per-device-type"]
	if tmpl == nil {
		t.Fatal("no template per-device-type")
	}
	type rec struct {
		Passed  bool
		Defines []string
	}
	var recs []rec
	for _, r := range tmpl.Records {
		recs = append(recs, rec{r.Passed, r.Defines})
		if !r.Passed && !strings.Contains(r.Reason, `dt.arch = "arm`) {
			t.Errorf("record %d: skip reason %q does not name dt.arch", r.Index, r.Reason)
		}
	}
	wantRecs := []rec{
		{false, nil}, {false, nil},
		{true, []string{"images.fleet-x86-nuc"}},
		{true, []string{"images.fleet-x86-thin-client"}},
		{false, nil},
		{true, []string{"images.fleet-x86-gateway"}},
	}
	if d := cmp.Diff(wantRecs, recs); d != "" {
		t.Errorf("template records (-want +got):\n%s", d)
	}
	if r := tmpl.Records[0].Reason; !strings.Contains(r, `dt.arch = "arm64"`) {
		t.Errorf("reason for record 0 = %q, want it to mention dt.arch = \"arm64\"", r)
	}
	if tmpl.Param != "dt" || tmpl.Filter != `dt.arch == "amd64"` {
		t.Errorf("param %q filter %q", tmpl.Param, tmpl.Filter)
	}

	nuc := ws.Images["fleet-x86-nuc"]
	if len(nuc.Stages) != 2 {
		t.Fatalf("fleet-x86-nuc has %d stages", len(nuc.Stages))
	}
	motd := nuc.Stages[1]
	wantCmd := []string{"/bin/sh", "-c", "mkdir -p /run/strata/tree/etc && echo 'strata fleet image for x86/nuc (3 devices)' > /run/strata/tree/etc/motd"}
	if d := cmp.Diff(wantCmd, motd.Command); d != "" {
		t.Errorf("acme.motd command (-want +got):\n%s", d)
	}
	if d := cmp.Diff(`{"device_type":"x86/nuc","devices":3}`, string(motd.Options)); d != "" {
		t.Errorf("acme.motd options (-want +got):\n%s", d)
	}
	if d := cmp.Diff(`{"hostname":"x86-nuc"}`, string(nuc.Stages[0].Options)); d != "" {
		t.Errorf("hostname options (-want +got):\n%s", d)
	}
	if got, want := motd.Pos.String(), "fleet.cue:49:5"; got != want {
		t.Errorf("acme.motd stage at %s, want %s", got, want)
	}
	base := ws.Images["base"]
	var basePos []string
	for _, st := range base.Stages {
		basePos = append(basePos, st.Pos.String())
	}
	if d := cmp.Diff([]string{"fleet.cue:17:3", "fleet.cue:18:3", "fleet.cue:19:3"}, basePos); d != "" {
		t.Errorf("base stage positions (-want +got):\n%s", d)
	}
	if got := base.Pos.String(); got != "fleet.cue:14:9" {
		t.Errorf("base at %s", got)
	}
	if m := ws.StageModules["acme.motd"]; m == nil || m.Builtin || m.Pos.String() != "fleet.cue:26:9" {
		t.Errorf("acme.motd module: %+v", m)
	}
	if h := ws.Hooks["size-check"]; h == nil || h.OnFailure != "warn" || h.BuildRoot != "host" {
		t.Errorf("hook size-check: %+v", h)
	}
	if r := ws.Resources["device-types"]; r == nil || len(r.Records) != 6 {
		t.Errorf("resource device-types: %+v", r)
	}
	// The lab: a probe job's resource and a per-device test template that
	// waits on it; a lint hook in the host-tools image and a cleanup hook.
	if h := ws.Hooks["lint"]; h == nil || h.On != "post-build" || h.BuildRoot != "images.host-tools" {
		t.Errorf("hook lint: %+v", h)
	}
	if h := ws.Hooks["cleanup"]; h == nil || h.On != "cleanup" {
		t.Errorf("hook cleanup: %+v", h)
	}
	if d := cmp.Diff([]string{"size-check", "lint", "cleanup"}, nuc.Hooks); d != "" {
		t.Errorf("fleet-x86-nuc hooks (-want +got):\n%s", d)
	}
	if r := ws.Resources["bench"]; r == nil || r.Job != "probe" || !r.Pending {
		t.Errorf("resource bench: %+v", r)
	}
	if tm := ws.Templates["per-device-test"]; tm == nil || !tm.Pending || tm.Job != "probe" {
		t.Errorf("template per-device-test: %+v", tm)
	}
	if j := ws.Jobs["probe"]; j == nil || !slices.Contains(j.Outputs, lang.RecordsFile) {
		t.Errorf("job probe: %+v", j)
	}
}

// TestLoadFleetBench: given the probe's records, the per-device test template
// defines one job per bench device whose image this host builds, checked
// against the bench's schema: a device type the fleet does not have is an
// error at the record's line.
func TestLoadFleetBench(t *testing.T) {
	records := `{"name": "nuc-7", "device_type": "x86/nuc", "slot": 1}
{"name": "pi-2", "device_type": "raspberry-pi/4", "slot": 4}
`
	ws, err := lang.Load(context.Background(), "../examples/fleet", lang.WithJobRecords(map[string][]byte{"probe": []byte(records)}))
	if err != nil {
		t.Fatal(err)
	}
	j := ws.Jobs["bench/nuc-7"]
	if j == nil || j.Image != "images.fleet-x86-nuc" || j.Instance.RecordPos.String() != "jobs.probe/records.jsonl:1:1" {
		t.Fatalf("jobs.bench/nuc-7: %+v", j)
	}
	if ws.Jobs["bench/pi-2"] != nil {
		t.Error("pi-2 has no image this host builds, yet a test job")
	}
	_, err = lang.Load(context.Background(), "../examples/fleet", lang.WithJobRecords(map[string][]byte{
		"probe": []byte(`{"name": "vax", "device_type": "dec/vax", "slot": 1}`),
	}))
	want := `jobs.probe/records.jsonl:1:32: resources.bench[0].device_type: "dec/vax" is not allowed here (want one of: "raspberry-pi/4", "raspberry-pi/3b", "x86/nuc", "x86/thin-client", "beaglebone/black", "x86/gateway")`
	if err == nil || err.Error() != want {
		t.Errorf("got %v", err)
	}
}

// TestLoadDataFiles loads workspaces whose spec is partly or only .json and .yaml.
func TestLoadDataFiles(t *testing.T) {
	cases := map[string]map[string]string{
		"json-only": {
			"images.json": `{"images": {"base": {"version": "1", "stages": [{"type": "strata.hostname", "options": {"hostname": "box"}}]}}}`,
		},
		"yaml-only": {
			"images.yaml": "images:\n  base:\n    version: \"1\"\n    stages:\n      - type: strata.hostname\n        options:\n          hostname: box\n",
		},
		"cue+json+yaml": {
			"main.cue":    "package ok\n\nimages: base: version: \"1\"\n",
			"stages.json": `{"images": {"base": {"stages": [{"type": "strata.hostname", "options": {"hostname": "box"}}]}}}`,
			"hooks.yaml":  "hooks:\n  lint:\n    on: post-build\n    command: [\"true\"]\nimages:\n  base:\n    hooks: [lint]\n",
		},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			ar := &archive{Files: []archiveFile{{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)}}}
			for n, data := range files {
				ar.Files = append(ar.Files, archiveFile{Name: n, Data: []byte(data)})
			}
			dir, _, _ := extract(t, ar)
			ws, err := load(t, dir)
			if err != nil {
				t.Fatal(err)
			}
			img := ws.Images["base"]
			if img == nil {
				t.Fatalf("no image base: %v", keys(ws.Images))
			}
			if img.Version != "1" || len(img.Stages) != 1 || string(img.Stages[0].Options) != `{"hostname":"box"}` {
				t.Errorf("base: %+v", img)
			}
			if img.Pos.File == "" || img.Pos.File == "." || img.Pos.Line == 0 {
				t.Errorf("base has no position in a spec file: %v", img.Pos)
			}
			if name == "cue+json+yaml" {
				if d := cmp.Diff([]string{"lint"}, img.Hooks); d != "" {
					t.Errorf("hooks (-want +got):\n%s", d)
				}
				if got := img.Stages[0].Pos.File; got != "stages.json" {
					t.Errorf("stage position %v, want stages.json", img.Stages[0].Pos)
				}
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestLoadIgnoresNonSpecData: .json/.yaml files that are not spec files (a plan
// written by `strata compile -o plan.json`, a package.json, a YAML list) are left
// out of the workspace, each with a warning saying why.
func TestLoadIgnoresNonSpecData(t *testing.T) {
	ar := &archive{Files: []archiveFile{
		{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)},
		{Name: "main.cue", Data: []byte("package ok\n\nimages: base: version: \"1\"\n")},
		{Name: "plan.json", Data: []byte(`{"version": 1, "host": {}, "nodes": [], "images": {"base": {"tree": "x"}}}`)},
		{Name: "package.json", Data: []byte(`{"name": "site", "version": "1.0.0"}`)},
		{Name: "list.yaml", Data: []byte("- a\n- b\n")},
		{Name: "extra.json", Data: []byte(`{"images": {"base": {"device_types": ["pi"]}}}`)},
	}}
	dir, _, _ := extract(t, ar)
	ws, err := load(t, dir)
	if err != nil {
		t.Fatalf("a plan or package.json in the workspace broke loading:\n%v", err)
	}
	if got := ws.Images["base"].DeviceTypes; len(got) != 1 || got[0] != "pi" {
		t.Errorf("the real spec file extra.json was not merged: %v", got)
	}
	warned := warnings(ws, "ignored: not a strata spec file")
	sort.Strings(warned)
	want := []string{
		`list.yaml: ignored: not a strata spec file (its top level is not an object)`,
		`package.json:1:3: ignored: not a strata spec file (top-level key "name" is not one of images, jobs, hooks, sources, resources, stages, templates)`,
		`plan.json:1:3: ignored: not a strata spec file (top-level key "version" is not one of images, jobs, hooks, sources, resources, stages, templates)`,
	}
	if d := cmp.Diff(want, warned); d != "" {
		t.Errorf("warnings (-want +got):\n%s", d)
	}
}

// TestLoadSourcesUnderEmbeddedSchema: the examples embed strata.#Workspace on a
// line of its own, which opens the schema's definitions; every kind of source
// still loads, with and without the embedding.
func TestLoadSourcesUnderEmbeddedSchema(t *testing.T) {
	const sources = `
sources: s: path: "overlay"
sources: u: {url: "https://example.com/x.tar", sha256: "` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"}
sources: g: {git: "https://example.com/x.git", commit: "0123456789abcdef0123456789abcdef01234567"}
images: a: {version: "1", stages: [{type: "strata.copy", inputs: o: "sources.s", options: input: "o"}]}
`
	for name, head := range map[string]string{
		"embedded": "package ok\n\nimport \"strata.build/strata\"\n\nstrata.#Workspace\n",
		"plain":    "package ok\n",
	} {
		t.Run(name, func(t *testing.T) {
			ar := &archive{Files: []archiveFile{
				{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)},
				{Name: "overlay/f", Data: []byte("x")},
				{Name: "main.cue", Data: []byte(head + sources)},
			}}
			dir, _, _ := extract(t, ar)
			ws, err := load(t, dir)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]lang.Source{}
			for n, s := range ws.Sources {
				s := *s
				s.Pos = lang.Pos{}
				got[n] = s
			}
			want := map[string]lang.Source{
				"s": {Name: "s", Path: "overlay"},
				"u": {Name: "u", URL: "https://example.com/x.tar", SHA256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
				"g": {Name: "g", Git: "https://example.com/x.git", Commit: "0123456789abcdef0123456789abcdef01234567"},
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("sources (-want +got):\n%s", d)
			}
		})
	}
}

// An image without outputs gets the tree output; one that asks for none gets none.
func TestLoadOutputsDefault(t *testing.T) {
	ar := &archive{Files: []archiveFile{
		{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)},
		{Name: "main.cue", Data: []byte("package ok\n\nimages: a: version: \"1\"\nimages: b: {version: \"1\", outputs: []}\nimages: c: {version: \"1\", outputs: [{type: \"ext4\"}]}\n")},
	}}
	dir, _, _ := extract(t, ar)
	ws, err := load(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for name, img := range ws.Images {
		got[name] = []string{}
		for _, o := range img.Outputs {
			got[name] = append(got[name], fmt.Sprintf("%s %s %d", o.Type, o.Name, o.Size))
		}
	}
	want := map[string][]string{"a": {"tree a.tree 0"}, "b": {}, "c": {"ext4 c.ext4 0"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("outputs (-want +got):\n%s", d)
	}
}

// Images a comprehension makes have the comprehension's position, in warnings
// and errors alike, and the host build root warning comes once.
func TestLoadComprehensionPositions(t *testing.T) {
	ar := &archive{Files: []archiveFile{
		{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)},
		{Name: "main.cue", Data: []byte(`package ok

_names: ["a", "b"]
for n in _names {
	images: (n): {version: "1", stages: [{type: "strata.hostname", options: hostname: n}]}
}
images: c: {version: "1", stages: [{type: "strata.hostname", options: hostname: "c"}]}
`)},
	}}
	dir, _, _ := extract(t, ar)
	ws, err := load(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	got := warnings(ws, "")
	want := []string{`main.cue:5:10: build root "host" is not hermetic: images.a, images.b and images.c build in the host's /usr, so their keys hold a host fingerprint`}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("warnings (-want +got):\n%s", d)
	}
	if p := ws.Images["b"].Stages[0].Pos.String(); p != "main.cue:5:39" {
		t.Errorf("images.b.stages[0] at %s, want the comprehension's main.cue:5:39", p)
	}
}

// TestDecimalModeWarning: a mode written 644 is six hundred and forty-four
// (0o1204): a warning says so, at the literal. 0o644 and a decimal that means
// a mode (420) pass quietly.
func TestDecimalModeWarning(t *testing.T) {
	ar := &archive{Files: []archiveFile{
		{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)},
		{Name: "main.cue", Data: []byte(`package bad
images: img: {
	version: "1"
	stages: [{type: "strata.files", options: files: {
		"/etc/a": {content: "a", mode: 644}
		"/etc/b": {content: "b", mode: 0o644}
		"/etc/c": {content: "c", mode: 420}
	}}]
}
`)},
	}}
	dir, _, _ := extract(t, ar)
	ws, err := load(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	got := warnings(ws, "is decimal")
	want := []string{`main.cue:5:34: images.img.stages[0].options.files./etc/a.mode: 644 is decimal, which is mode 0o1204; write 0o644 for the mode it reads as`}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("warnings (-want +got):\n%s", d)
	}
}

// warnings are ws's warnings whose message holds substr, as they print.
func warnings(ws *lang.Workspace, substr string) []string {
	var out []string
	for _, w := range ws.Warnings {
		if strings.Contains(w.Msg, substr) {
			out = append(out, w.String())
		}
	}
	return out
}
