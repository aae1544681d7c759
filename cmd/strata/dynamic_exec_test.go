package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/lang"
)

// The Checkbox template-job example: a devices resource with CDROM and other
// records, and a template that defines one job per CDROM, named from the
// record.
const checkboxTemplate = `
templates: "optical-read": {
	resource: "devices"
	each: {
		device: _
		if: device.category == "CDROM"
		jobs: "optical/read_\(device.name)": command: ["/bin/sh", "-c", "echo reading \(device.path)"]
	}
}
`

const checkboxStaticWS = `package test

resources: devices: [
	{name: "sr0", category: "CDROM", path: "/dev/sr0"},
	{name: "sda", category: "DISK", path: "/dev/sda"},
	{name: "sr1", category: "CDROM", path: "/dev/sr1"},
	{name: "eth0", category: "NETWORK", path: "/sys/class/net/eth0"},
]
` + checkboxTemplate

// checkboxProbeWS has the same records, written by a probe job.
const checkboxProbeWS = `package test

resources: devices: {
	job: "probe"
	schema: {
		name:     =~"^[a-z0-9]+$"
		category: "CDROM" | "DISK" | "NETWORK"
		path:     =~"^/"
	}
}
jobs: probe: command: ["/bin/sh", "-c", """
	cat > /run/strata/out/records.jsonl <<'EOF'
	{"name": "sr0", "category": "CDROM", "path": "/dev/sr0"}
	{"name": "sda", "category": "DISK", "path": "/dev/sda"}
	{"name": "sr1", "category": "CDROM", "path": "/dev/sr1"}
	{"name": "eth0", "category": "NETWORK", "path": "/sys/class/net/eth0"}
	EOF
	"""]
` + checkboxTemplate

// checkboxRecordsOut is what expand shows of the records, static or probed.
const checkboxRecordsOut = `  filter:   if device.category == "CDROM"
  records:  2 passed, 2 skipped
    [0] pass  {"name":"sr0","category":"CDROM","path":"/dev/sr0"}
    [1] skip  {"name":"sda","category":"DISK","path":"/dev/sda"}
          if device.category == "CDROM" is false (device.category = "DISK")
    [2] pass  {"name":"sr1","category":"CDROM","path":"/dev/sr1"}
    [3] skip  {"name":"eth0","category":"NETWORK","path":"/sys/class/net/eth0"}
          if device.category == "CDROM" is false (device.category = "NETWORK")
  instances: 2
`

// TestCheckboxExpandStatic: strata expand shows the template, every record,
// the filter's verdict on each (and why a record was skipped), and exactly one
// job per CDROM record, named from the record, with its origin: the record's
// line and the template's.
func TestCheckboxExpandStatic(t *testing.T) {
	ws := writeWS(t, checkboxStaticWS)
	code, stdout, stderr := strata(t, "-C", ws, "expand")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := `template optical-read  (ws.cue:10:12)
  resource: devices (4 records), parameter: device
` + checkboxRecordsOut + `    jobs.optical/read_sr0  from record 0 (ws.cue:4:2) at ws.cue:15:9
    jobs.optical/read_sr1  from record 2 (ws.cue:6:2) at ws.cue:15:9
`
	if d := cmp.Diff(want, stdout); d != "" {
		t.Errorf("expand (-want +got):\n%s", d)
	}
}

// TestCheckboxExpandProbeExec: with the devices produced by a probe job,
// expand says the template waits on jobs.probe; with --run-resources it runs
// the probe and shows the same expansion as over the records written down,
// each instance's origin naming the probe's line.
func TestCheckboxExpandProbeExec(t *testing.T) {
	strataBin(t)
	ws, cache := writeWS(t, checkboxProbeWS), t.TempDir()
	r := runCLI(t, ws, cache, "expand")
	want := `template optical-read  (ws.cue:20:12)
  resource: devices (records from jobs.probe), parameter: device
  filter:   if device.category == "CDROM"
  waits on jobs.probe: its records exist once it ran (strata expand --run-resources runs it; strata build does)
`
	if r.code != 0 || r.stdout != want {
		t.Errorf("expand: exit %d\n%s", r.code, cmp.Diff(want, r.stdout))
	}
	r = runCLI(t, ws, cache, "expand", "--run-resources")
	want = `template optical-read  (ws.cue:20:12)
  resource: devices (4 records from jobs.probe), parameter: device
` + checkboxRecordsOut + `    jobs.optical/read_sr0  from record 0 (jobs.probe/records.jsonl:1:1) at ws.cue:25:9
    jobs.optical/read_sr1  from record 2 (jobs.probe/records.jsonl:3:1) at ws.cue:25:9
`
	if r.code != 0 || r.stdout != want {
		t.Errorf("expand --run-resources: exit %d\n%s\n%s", r.code, cmp.Diff(want, r.stdout), r.stderr)
	}
	r = runCLI(t, ws, cache, "--output", "json", "expand", "--run-resources")
	var doc struct {
		Templates []struct {
			Job       string
			Pending   bool
			Instances []struct {
				Name      string
				Record    int
				RecordPos lang.Pos `json:"record_pos"`
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Templates) != 1 {
		t.Fatalf("expand --output json: %v\n%s", err, r.stdout)
	}
	tmpl := doc.Templates[0]
	if tmpl.Job != "probe" || tmpl.Pending || len(tmpl.Instances) != 2 || tmpl.Instances[1].RecordPos.String() != "jobs.probe/records.jsonl:3:1" {
		t.Errorf("expand --output json: %+v", tmpl)
	}
}

// TestResourceJobsRunOnceExec drives the two rounds through the library calls
// strata build makes: the first plan's resource job runs, its records expand
// the template, and the whole plan's build finds the job cached: every node
// runs once.
func TestResourceJobsRunOnceExec(t *testing.T) {
	ctx := context.Background()
	dir := writeWS(t, checkboxProbeWS)
	verified := func(opts ...lang.Option) *plan.Verified {
		t.Helper()
		ws, err := lang.Load(ctx, dir, opts...)
		must(t, err)
		p, err := compiler.Compile(ctx, ws, compiler.Options{StrataVersion: "test"})
		must(t, err)
		v, err := plan.Verify(p, plan.VerifyOptions{Host: plan.HostFingerprint("test")})
		must(t, err)
		return v
	}
	st, err := store.Open(t.TempDir())
	must(t, err)
	defer st.Close()
	opts := executor.Options{Store: st, Binary: strataBin(t), Workspace: dir, OutDir: t.TempDir()}
	inner, err := executor.NewLocalRunner(opts)
	must(t, err)
	rec := &recordingRunner{inner: inner, calls: map[string]int{}}
	opts.Runner = rec

	records, res, err := runResourceJobs(ctx, verified(), opts)
	if err != nil {
		t.Fatalf("resource jobs: %v (%+v)", err, res)
	}
	if n := strings.Count(string(records["probe"]), "\n"); n != 4 || !strings.Contains(string(records["probe"]), `"name": "eth0"`) {
		t.Fatalf("records: %q", records)
	}
	v := verified(lang.WithJobRecords(records))
	if _, err := executor.Build(ctx, v, opts); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"jobs.probe": 1, "jobs.optical/read_sr0": 1, "jobs.optical/read_sr1": 1}
	if d := cmp.Diff(want, rec.calls); d != "" {
		t.Errorf("runs (-want +got):\n%s", d)
	}
}

// TestCheckboxBuildAndTestProbeExec: strata build runs the probe, expands the
// template and builds the instances; strata test runs the per-device jobs and
// reports each; compile says the plan holds the template pending, and a plan
// file is built with it pending.
func TestCheckboxBuildAndTestProbeExec(t *testing.T) {
	strataBin(t)
	ws, cache := writeWS(t, checkboxProbeWS), t.TempDir()
	r := runCLI(t, ws, cache, "build")
	if r.code != 0 || !strings.Contains(r.stderr, "strata: templates.optical-read: 4 records from jobs.probe, 2 instances") ||
		!strings.Contains(r.stderr, "done    jobs.optical/read_sr1") || !strings.Contains(r.stderr, "cached  jobs.probe") {
		t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
	}
	// Built again unchanged, with the same records: both plans come from the
	// compile cache (the expanded one keyed by the records), and the note of
	// what the template gave comes from the plan.
	r = runCLI(t, ws, cache, "-v", "build")
	if r.code != 0 || strings.Count(r.stderr, "compile cache hit") != 2 || !strings.Contains(r.stderr, "strata: templates.optical-read: 4 records from jobs.probe, 2 instances") {
		t.Fatalf("second build: exit %d\n%s", r.code, r.stderr)
	}
	// One invocation, one account: the probe ran in the first round, so the
	// result says built, though the second round found it cached.
	r = runCLI(t, ws, t.TempDir(), "--output", "json", "build")
	var built struct {
		Result struct {
			Built, Cached int
			Nodes         []struct{ Name, Status string }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &built); err != nil || r.code != 0 {
		t.Fatalf("build --output json: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	for _, n := range built.Result.Nodes {
		if n.Status != "built" {
			t.Errorf("build --output json of a new store: %s is %s", n.Name, n.Status)
		}
	}
	if built.Result.Cached != 0 || built.Result.Built != len(built.Result.Nodes) {
		t.Errorf("build --output json of a new store: %d built, %d cached of %d nodes", built.Result.Built, built.Result.Cached, len(built.Result.Nodes))
	}
	junit := filepath.Join(t.TempDir(), "report.xml")
	r = runCLI(t, ws, cache, "--output", "json", "test", "--junit", junit)
	var doc struct {
		OK   bool
		Jobs []struct {
			Name, Status string
			Cached       bool
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || !doc.OK || r.code != 0 {
		t.Fatalf("test: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	var names []string
	for _, j := range doc.Jobs {
		names = append(names, j.Name)
		if j.Status != "passed" || !j.Cached {
			t.Errorf("%s: %s, cached %v", j.Name, j.Status, j.Cached)
		}
	}
	if d := cmp.Diff([]string{"jobs.optical/read_sr0", "jobs.optical/read_sr1", "jobs.probe"}, sortedStrings(names)); d != "" {
		t.Errorf("jobs reported (-want +got):\n%s", d)
	}
	if r := runCLI(t, ws, cache, "test", "optical/read_sr0"); r.code != 0 || !strings.Contains(r.stdout, "passed  jobs.optical/read_sr0") {
		t.Errorf("test optical/read_sr0: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// An instance's log is found from the records in the store; nothing runs.
	if r := runCLI(t, ws, cache, "logs", "jobs.optical/read_sr1"); r.code != 0 || r.stdout != "reading /dev/sr1\n" {
		t.Errorf("logs: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, ws, t.TempDir(), "logs", "jobs.optical/read_sr1"); r.code != 2 ||
		!strings.Contains(r.stderr, "templates.optical-read waits on jobs.probe, whose records the store does not hold (strata build or strata test runs it)") {
		t.Errorf("logs with an empty store: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	planFile := filepath.Join(t.TempDir(), "plan.json")
	for range 2 { // a compile, then a compile-cache hit
		r = runCLI(t, ws, cache, "compile", "-o", planFile)
		if r.code != 0 || !strings.Contains(r.stderr, "strata: templates.optical-read waits on jobs.probe; the plan holds it pending (strata build runs the jobs first)") {
			t.Fatalf("compile: exit %d\n%s", r.code, r.stderr)
		}
	}
	b, err := os.ReadFile(planFile)
	must(t, err)
	if !strings.Contains(string(b), `"pending": [`) || strings.Contains(string(b), "read_sr0") {
		t.Errorf("plan file:\n%s", b)
	}
	r = runCLI(t, ws, cache, "build", planFile)
	if r.code != 0 || !strings.Contains(r.stderr, "templates.optical-read waits on jobs.probe; a plan file keeps it pending") ||
		strings.Contains(r.stderr, "read_sr0") {
		t.Errorf("build plan.json: exit %d\n%s", r.code, r.stderr)
	}
}

// TestResourceJobFailsExec: when the probe fails, build fails naming it and
// builds nothing else; test reports the probe failed, in JUnit too.
func TestResourceJobFailsExec(t *testing.T) {
	strataBin(t)
	ws, cache := writeWS(t, strings.Replace(checkboxProbeWS, "cat > /run", "echo no inventory; exit 3; cat > /run", 1)), t.TempDir()
	r := runCLI(t, ws, cache, "build")
	if r.code != 1 || !strings.Contains(r.stderr, "strata: build failed: jobs.probe (ws.cue:11:7): exit status 3") ||
		!strings.Contains(r.stderr, "| no inventory") || strings.Contains(r.stderr, "optical") {
		t.Errorf("build: exit %d\n%s", r.code, r.stderr)
	}
	junit := filepath.Join(t.TempDir(), "report.xml")
	r = runCLI(t, ws, cache, "test", "--junit", junit)
	if r.code != 1 || !strings.Contains(r.stdout, "failed  jobs.probe") {
		t.Errorf("test: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	b, err := os.ReadFile(junit)
	must(t, err)
	var suites struct {
		Suites []struct {
			Failures int `xml:"failures,attr"`
			Cases    []struct {
				Name string `xml:"name,attr"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &suites); err != nil || len(suites.Suites) != 1 || suites.Suites[0].Failures != 1 ||
		len(suites.Suites[0].Cases) != 1 || suites.Suites[0].Cases[0].Name != "jobs.probe" {
		t.Errorf("JUnit: %v\n%s", err, b)
	}
}

// TestResourceJobBadRecordExec: a record the resource's schema refuses is a
// spec error (exit 2) at the record's line and field, and nothing but the
// probe runs; a probe that writes no records.jsonl fails, naming the file.
func TestResourceJobBadRecordExec(t *testing.T) {
	strataBin(t)
	ws, cache := writeWS(t, strings.Replace(checkboxProbeWS, `"category": "DISK"`, `"category": "TAPE"`, 1)), t.TempDir()
	r := runCLI(t, ws, cache, "build")
	want := `jobs.probe/records.jsonl:2:29: resources.devices[1].category: "TAPE" is not allowed here (want one of: "CDROM", "DISK", "NETWORK")`
	if r.code != 2 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "optical") {
		t.Errorf("build: exit %d\n%s", r.code, r.stderr)
	}
	ws = writeWS(t, strings.Replace(checkboxProbeWS, "cat > /run/strata/out/records.jsonl", "cat > /dev/null", 1))
	r = runCLI(t, ws, cache, "build")
	if r.code != 1 || !strings.Contains(r.stderr, "jobs.probe (ws.cue:11:7): the job did not write its output records.jsonl to /run/strata/out") {
		t.Errorf("build without records: exit %d\n%s", r.code, r.stderr)
	}
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
