package lang_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

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
		jobs: "optical/read_\(device.name)": {
			command: ["/bin/sh", "-c", "echo reading \(device.path)"]
		}
	}
}
`

const checkboxStatic = `package checkbox

resources: devices: [
	{name: "sr0", category: "CDROM", path: "/dev/sr0"},
	{name: "sda", category: "DISK", path: "/dev/sda"},
	{name: "sr1", category: "CDROM", path: "/dev/sr1"},
	{name: "eth0", category: "NETWORK", path: "/sys/class/net/eth0"},
]
` + checkboxTemplate

const checkboxProbe = `package checkbox

resources: devices: {
	job: "probe"
	schema: {
		name:     =~"^[a-z0-9]+$"
		category: "CDROM" | "DISK" | "NETWORK"
		path:     =~"^/"
	}
}
jobs: probe: command: ["/bin/sh", "-c", "cat devices.jsonl > /run/strata/out/records.jsonl"]
` + checkboxTemplate

// checkboxRecords is what the probe writes: the static records, one per line.
const checkboxRecords = `{"name": "sr0", "category": "CDROM", "path": "/dev/sr0"}
{"name": "sda", "category": "DISK", "path": "/dev/sda"}

{"name": "sr1", "category": "CDROM", "path": "/dev/sr1"}
{"name": "eth0", "category": "NETWORK", "path": "/sys/class/net/eth0"}
`

func loadSrc(t *testing.T, src string, opts ...lang.Option) (*lang.Workspace, error) {
	t.Helper()
	dir, _, _ := extract(t, &archive{Files: []archiveFile{
		{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)},
		{Name: "main.cue", Data: []byte(src)},
	}})
	return lang.Load(context.Background(), dir, opts...)
}

// templateView is what a template gave, without positions: the same for
// records written down and records a job wrote.
type templateView struct {
	Passed  []bool
	Defines [][]string
	Reasons []string
	Jobs    map[string][]string
}

func viewOf(ws *lang.Workspace, name string) templateView {
	t := ws.Templates[name]
	v := templateView{Jobs: map[string][]string{}}
	for _, r := range t.Records {
		v.Passed = append(v.Passed, r.Passed)
		v.Defines = append(v.Defines, r.Defines)
		v.Reasons = append(v.Reasons, r.Reason)
	}
	for n, j := range ws.Jobs {
		if j.Instance != nil {
			v.Jobs[n] = j.Command
		}
	}
	return v
}

// TestCheckboxStaticResource: the filter category == "CDROM" yields exactly one
// job per CDROM record, named from the record, each with its origin (the
// template line and the record's line); the other records are skipped with the
// value the filter read.
func TestCheckboxStaticResource(t *testing.T) {
	ws, err := loadSrc(t, checkboxStatic)
	if err != nil {
		t.Fatal(err)
	}
	want := templateView{
		Passed:  []bool{true, false, true, false},
		Defines: [][]string{{"jobs.optical/read_sr0"}, nil, {"jobs.optical/read_sr1"}, nil},
		Reasons: []string{"", `if device.category == "CDROM" is false (device.category = "DISK")`, "", `if device.category == "CDROM" is false (device.category = "NETWORK")`},
		Jobs: map[string][]string{
			"optical/read_sr0": {"/bin/sh", "-c", "echo reading /dev/sr0"},
			"optical/read_sr1": {"/bin/sh", "-c", "echo reading /dev/sr1"},
		},
	}
	if d := cmp.Diff(want, viewOf(ws, "optical-read")); d != "" {
		t.Errorf("expansion (-want +got):\n%s", d)
	}
	in := ws.Jobs["optical/read_sr1"].Instance
	wantIn := &lang.Instance{Template: "optical-read", Resource: "devices", Record: 2,
		RecordPos: lang.Pos{File: "main.cue", Line: 6, Col: 2}, Pos: lang.Pos{File: "main.cue", Line: 15, Col: 9}}
	if d := cmp.Diff(wantIn, in); d != "" {
		t.Errorf("origin (-want +got):\n%s", d)
	}
}

// TestCheckboxJobResourcePending: without the probe's records the template
// waits on the probe: no error, no instance, and the probe must write
// records.jsonl.
func TestCheckboxJobResourcePending(t *testing.T) {
	ws, err := loadSrc(t, checkboxProbe)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := ws.Templates["optical-read"]
	if !tmpl.Pending || tmpl.Job != "probe" || len(tmpl.Records) != 0 || tmpl.Param != "device" || tmpl.Filter != `device.category == "CDROM"` {
		t.Errorf("template: %+v", tmpl)
	}
	if r := ws.Resources["devices"]; !r.Pending || r.Job != "probe" || !strings.Contains(r.Schema, `category: "CDROM" | "DISK" | "NETWORK"`) {
		t.Errorf("resource: %+v", r)
	}
	if d := cmp.Diff([]string{"probe"}, keys(ws.Jobs)); d != "" {
		t.Errorf("jobs (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{lang.RecordsFile}, ws.Jobs["probe"].Outputs); d != "" {
		t.Errorf("probe outputs (-want +got):\n%s", d)
	}
}

// TestCheckboxJobResourceRecords: given what the probe wrote, the template
// expands exactly as over the same records written down (same names, filter
// verdicts, commands), each instance's origin naming the probe's line.
func TestCheckboxJobResourceRecords(t *testing.T) {
	static, err := loadSrc(t, checkboxStatic)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := loadSrc(t, checkboxProbe, lang.WithJobRecords(map[string][]byte{"probe": []byte(checkboxRecords)}))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(viewOf(static, "optical-read"), viewOf(ws, "optical-read")); d != "" {
		t.Errorf("job records expand otherwise than written records (-static +job):\n%s", d)
	}
	tmpl := ws.Templates["optical-read"]
	if tmpl.Pending || tmpl.Job != "probe" || len(tmpl.Records) != 4 {
		t.Errorf("template: %+v", tmpl)
	}
	var rec map[string]any
	if err := json.Unmarshal(tmpl.Records[3].Record, &rec); err != nil || rec["name"] != "eth0" {
		t.Errorf("record 3: %s (%v)", tmpl.Records[3].Record, err)
	}
	in := ws.Jobs["optical/read_sr1"].Instance
	// Line 4 of what the probe wrote: blank lines are not records.
	wantIn := &lang.Instance{Template: "optical-read", Resource: "devices", Record: 2,
		RecordPos: lang.Pos{File: "jobs.probe/records.jsonl", Line: 4, Col: 1}, Pos: lang.Pos{File: "main.cue", Line: 18, Col: 9}}
	if d := cmp.Diff(wantIn, in); d != "" {
		t.Errorf("origin (-want +got):\n%s", d)
	}
	if ws.Resources["devices"].Pending {
		t.Error("resource still pending")
	}
}

// TestJobRecordsSchemaDefaults: a record is unified with the schema, so its
// defaults apply before the template reads it.
func TestJobRecordsSchemaDefaults(t *testing.T) {
	src := strings.Replace(checkboxProbe, `path:     =~"^/"`, `path:     =~"^/" | *"/dev/null"`, 1)
	ws, err := loadSrc(t, src, lang.WithJobRecords(map[string][]byte{"probe": []byte(`{"name": "sr9", "category": "CDROM"}`)}))
	if err != nil {
		t.Fatal(err)
	}
	if j := ws.Jobs["optical/read_sr9"]; j == nil || j.Command[2] != "echo reading /dev/null" {
		t.Errorf("instance: %+v", j)
	}
}

// TestJobRecordsErrors: what a job wrote that is not a record, or a record its
// resource's schema refuses, is an error at the record's line (and the
// field's column), with the record's path; the template shows the record in
// error and defines nothing for it.
func TestJobRecordsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, records string
		want          []string
	}{
		{"schema", `{"name": "sr0", "category": "CDROM", "path": "/dev/sr0"}
{"name": "sr1", "category": "TAPE", "path": "/dev/st0"}
{"name": "sr2", "path": "/dev/sr2"}
{"name": "Bad Name", "category": "DISK", "path": 3}
`, []string{
			`jobs.probe/records.jsonl:2:29: resources.devices[1].category: "TAPE" is not allowed here (want one of: "CDROM", "DISK", "NETWORK")`,
			`jobs.probe/records.jsonl:3:1: resources.devices[2].category: missing required field (want "CDROM" | "DISK" | "NETWORK")`,
			`jobs.probe/records.jsonl:4:10: resources.devices[3].name: invalid value "Bad Name" (out of bound =~"^[a-z0-9]+$")`,
			`jobs.probe/records.jsonl:4:50: resources.devices[3].path: conflicting values 3 and =~"^/" (mismatched types int and string) (other value at main.cue:8:13)`,
		}},
		{"not JSON", `{"name": "sr0", "category": "CDROM", "path": "/dev/sr0"}
{"name": "sr1",
["sr2"]
`, []string{
			`jobs.probe/records.jsonl:2:1: resources.devices[1]: a record is one JSON object on one line: unexpected end of JSON input`,
			`jobs.probe/records.jsonl:3:1: resources.devices[2]: a record is one JSON object on one line, not an array`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, err := loadSrc(t, checkboxProbe, lang.WithJobRecords(map[string][]byte{"probe": []byte(tc.records)}))
			if !errors.Is(err, lang.ErrInvalid) {
				t.Fatalf("want a workspace error, got %v", err)
			}
			checkErrors(t, err, map[string]bool{"main.cue": true, "jobs.probe/records.jsonl": true})
			if d := cmp.Diff(tc.want, strings.Split(err.Error(), "\n")); d != "" {
				t.Errorf("errors (-want +got):\n%s", d)
			}
			if tc.name != "schema" {
				return
			}
			tmpl := ws.Templates["optical-read"]
			if len(tmpl.Records) != 4 || !tmpl.Records[0].Passed || len(tmpl.Records[1].Errors) != 1 || len(tmpl.Records[3].Errors) != 2 {
				t.Fatalf("records: %+v", tmpl.Records)
			}
			if d := cmp.Diff([]string{"optical/read_sr0", "probe"}, keys(ws.Jobs)); d != "" {
				t.Errorf("jobs (-want +got):\n%s", d)
			}
		})
	}
}

// TestJobRecordsCollide: an instance from a job's record that defines a name
// the workspace already has is the same error as for records written down,
// naming the probe's line.
func TestJobRecordsCollide(t *testing.T) {
	src := checkboxProbe + `jobs: "optical/read_sr1": command: ["/bin/true"]
`
	_, err := loadSrc(t, src, lang.WithJobRecords(map[string][]byte{"probe": []byte(checkboxRecords)}))
	want := `main.cue:18:9: jobs.optical/read_sr1: defined twice: by jobs.optical/read_sr1 at main.cue:23:7 and by templates.optical-read record 2 (resources.devices[2] at jobs.probe/records.jsonl:4:1)`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

// TestJobResourceUndefinedJob: a resource's job must be defined.
func TestJobResourceUndefinedJob(t *testing.T) {
	src := strings.Replace(checkboxProbe, `job: "probe"`, `job: "prbe"`, 1)
	_, err := loadSrc(t, src)
	want := `main.cue:4:2: resources.devices.job: jobs.prbe is not defined (defined: probe); did you mean jobs.probe?`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

// TestJobRecordsTooLarge: what a job wrote is read up to MaxRecordsSize.
func TestJobRecordsTooLarge(t *testing.T) {
	big := []byte(strings.Repeat(" ", lang.MaxRecordsSize+1))
	_, err := loadSrc(t, checkboxProbe, lang.WithJobRecords(map[string][]byte{"probe": big}))
	want := "main.cue:3:12: resources.devices: jobs.probe wrote 67108865 bytes to records.jsonl; records are read up to 64 MiB"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}
