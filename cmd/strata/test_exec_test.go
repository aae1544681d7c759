package main

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/strata-build/strata/executor"
)

const jobsWS = `package test

images: img: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/etc/motd": content: "hi\n"}]
	outputs: [{type: "tar"}]
}
jobs: "checks/motd": {image: "images.img", command: ["/bin/sh", "-c", "grep -q hi etc/motd && echo motd ok"]}
jobs: "checks/fails": {image: "images.img", command: ["/bin/sh", "-c", "echo looking; exit 3"]}
jobs: after: {command: ["/bin/true"], needs: ["jobs.checks/fails"]}
`

// TestJobsAndJUnitExec: strata test runs the jobs, reports each (passed,
// failed with its log's end, skipped behind a failed need), exits 1, and
// writes JUnit XML that parses and lists every job; a job that passed is
// cached the second time.
func TestJobsAndJUnitExec(t *testing.T) {
	ws := writeWS(t, jobsWS)
	cache := t.TempDir()
	junit := filepath.Join(t.TempDir(), "report.xml")
	r := runCLI(t, ws, cache, "--output", "json", "test", "--junit", junit)
	if r.code != 1 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var doc struct {
		OK   bool
		Jobs []struct{ Name, Status, Error, Log string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	got := map[string]string{}
	for _, j := range doc.Jobs {
		got[j.Name] = j.Status
	}
	want := map[string]string{"jobs.checks/motd": "passed", "jobs.checks/fails": "failed", "jobs.after": "skipped"}
	for name, st := range want {
		if got[name] != st {
			t.Errorf("%s: %q, want %q (all: %v)", name, got[name], st, got)
		}
	}
	b, err := os.ReadFile(junit)
	must(t, err)
	var suites struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Skipped  int `xml:"skipped,attr"`
			Cases    []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Text string `xml:",chardata"`
				} `xml:"failure"`
				SystemOut string `xml:"system-out"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &suites); err != nil {
		t.Fatalf("JUnit XML does not parse: %v\n%s", err, b)
	}
	if len(suites.Suites) != 1 || suites.Suites[0].Tests != 3 || suites.Suites[0].Failures != 1 || suites.Suites[0].Skipped != 1 {
		t.Fatalf("JUnit suites: %+v", suites)
	}
	for _, c := range suites.Suites[0].Cases {
		if c.Name == "jobs.checks/fails" && (c.Failure == nil || !strings.Contains(c.Failure.Text, "exit status 3") || !strings.Contains(c.SystemOut, "looking")) {
			t.Errorf("failed case: %+v", c)
		}
		if c.Name == "jobs.checks/motd" && !strings.Contains(c.SystemOut, "motd ok") {
			t.Errorf("passed case: %+v", c)
		}
	}

	// The passing job again: cached, not run.
	r = runCLI(t, ws, cache, "test", "checks/motd")
	if r.code != 0 || !strings.Contains(r.stdout, "passed  jobs.checks/motd") || !strings.Contains(r.stdout, "cached") {
		t.Errorf("second run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestCapabilitiesExec: a job or a hook requiring kvm on a host without a
// usable /dev/kvm fails before any stage starts, naming it and what is missing;
// so does a command stage requiring an arch the host neither runs nor emulates.
func TestCapabilitiesExec(t *testing.T) {
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		t.Skip("this host has a usable /dev/kvm")
	}
	// An arch this host neither runs nor emulates (binfmt entries come and go).
	r := runCLI(t, "", t.TempDir(), "--output", "json", "doctor")
	var doc struct {
		Capabilities executor.Capabilities `json:"capabilities"`
	}
	must(t, json.Unmarshal([]byte(r.stdout), &doc))
	foreign := ""
	for _, a := range []string{"s390x", "ppc64le", "riscv64", "mips64le", "loong64"} {
		if a != doc.Capabilities.Arch && !slices.Contains(doc.Capabilities.Emulated, a) {
			foreign = a
			break
		}
	}
	if foreign == "" {
		t.Skip("this host emulates every arch the test could ask for")
	}
	ws := writeWS(t, strings.ReplaceAll(`package test
images: img: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/x": content: "x"}]
	hooks: ["vm"]
}
hooks: vm: {on: "post-build", buildroot: "host", command: ["/bin/true"], requires: features: ["kvm"]}
images: foreign: {
	version: "1"
	platform: arch: "ARCH"
	requires: arch: "ARCH"
	stages: [
		{type: "strata.files", options: files: "/x": content: "x"},
		{type: "strata.run", options: command: ["/bin/true"]},
	]
}
jobs: boot: {image: "images.img", command: ["/bin/true"], requires: features: ["kvm"]}
`, "ARCH", foreign))
	jb := buildJSON(t, ws, t.TempDir())
	if jb.code != 1 {
		t.Fatalf("exit %d: %s", jb.code, jb.stderr)
	}
	for _, want := range []string{"jobs.boot (ws.cue:", "kvm (no usable /dev/kvm)", "hooks.vm (ws.cue:", "images.foreign.stages[1]", "arch " + foreign} {
		if !strings.Contains(jb.stderr+jb.errText, want) {
			t.Errorf("the refusal lacks %q:\n%s%s", want, jb.stderr, jb.errText)
		}
	}
	if strings.Contains(jb.stderr+jb.errText, "images.foreign.stages[0]") {
		t.Errorf("a built-in stage (Go, the host's arch) was refused for its image's arch:\n%s", jb.errText)
	}
	for _, ev := range jb.events {
		if ev.Kind == executor.EventStarted {
			t.Errorf("%s started before the capability check refused the build", ev.Name)
		}
	}
}

// TestRunFlagsRefusedFirstExec: build and test refuse a negative -j or
// --timeout with exit 2 before they compile anything.
func TestRunFlagsRefusedFirstExec(t *testing.T) {
	ws := writeWS(t, `package test
images: img: {version: "1", stages: [{type: "strata.hostname", options: hostname: "h"}]}
`)
	cache := t.TempDir()
	for _, args := range [][]string{
		{"build", "--timeout", "-1s"}, {"build", "-j", "-1"},
		{"test", "--timeout", "-1s"}, {"test", "-j", "-1"},
	} {
		r := runCLI(t, ws, cache, args...)
		if r.code != 2 || strings.Contains(r.stderr, "compile") {
			t.Errorf("strata %v: exit %d\n%s", args, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(cache, "state", "compile")); !os.IsNotExist(err) {
		t.Errorf("a refused command compiled the workspace: %v", err)
	}
}
