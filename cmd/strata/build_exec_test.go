package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strata-build/strata/executor"
)

// These tests run the real static strata binary (built once with CGO_ENABLED=0)
// against real bwrap, a real store in t.TempDir() and the real image tools.

var (
	binOnce sync.Once
	binDir  string // removed by TestMain; one per test process, so runs can overlap
	binPath string
	binErr  error
)

func strataBin(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bwrap not installed")
	}
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "strata-exec-test-"); binErr != nil {
			return
		}
		// The rootless tests run the binary as another user.
		if binErr = os.Chmod(binDir, 0o755); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "strata")
		binErr = buildStrata(binDir, "")
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// buildStrata builds dir/strata-sandbox and dir/strata as make build does:
// strata linked with the companion's build ID, or with buildID when not "".
func buildStrata(dir, buildID string) error {
	companion := filepath.Join(dir, "strata-sandbox")
	goBuild := func(out, pkg string, ldflags ...string) error {
		cmd := exec.Command("go", append(append([]string{"build", "-o", out}, ldflags...), pkg)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
		return nil
	}
	if err := goBuild(companion, "../strata-sandbox"); err != nil {
		return err
	}
	if buildID == "" {
		var err error
		if buildID, err = goBuildID(companion); err != nil {
			return err
		}
	}
	return goBuild(filepath.Join(dir, "strata"), ".", "-ldflags", "-X main.sandboxBuildID="+buildID)
}

// goBuildID returns the Go build ID of the binary p.
func goBuildID(p string) (string, error) {
	out, err := exec.Command("go", "tool", "buildid", p).Output()
	if err != nil {
		return "", fmt.Errorf("go tool buildid %s: %w", p, err)
	}
	return strings.TrimSpace(string(out)), nil
}

type cliResult struct {
	code           int
	stdout, stderr string
}

func strataCmd(t *testing.T, ws, cache string, args ...string) *exec.Cmd {
	full := append([]string{"--cache-dir", cache, "--no-progress"}, args...)
	if ws != "" {
		full = append([]string{"-C", ws}, full...)
	}
	cmd := exec.Command(strataBin(t), full...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STRATA_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	return cmd
}

func runCLI(t *testing.T, ws, cache string, args ...string) cliResult {
	t.Helper()
	cmd := strataCmd(t, ws, cache, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return cliResult{code, out.String(), errb.String()}
}

// jsonBuild is a build's JSON event stream and result.
type jsonBuild struct {
	cliResult
	events  []executor.Event
	result  executor.BuildResult
	ok      bool
	errText string
}

// parseJSONBuild reads a --output json build: one result document on stdout,
// the events as JSON lines on stderr.
func parseJSONBuild(t *testing.T, r cliResult) jsonBuild {
	t.Helper()
	jb := jsonBuild{cliResult: r}
	var doc struct {
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(&doc); err != nil && r.stdout != "" {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, r.stdout)
	}
	if dec.More() {
		t.Fatalf("stdout holds more than one JSON document:\n%s", r.stdout)
	}
	jb.ok, jb.errText = doc.OK, doc.Error
	if len(doc.Result) > 0 {
		if err := json.Unmarshal(doc.Result, &jb.result); err != nil {
			t.Fatal(err)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(r.stderr))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var ev executor.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("stderr line is not a JSON event: %s", sc.Bytes())
		}
		jb.events = append(jb.events, ev)
	}
	return jb
}

func buildJSON(t *testing.T, ws, cache string, args ...string) jsonBuild {
	t.Helper()
	return parseJSONBuild(t, runCLI(t, ws, cache, append([]string{"--output", "json", "build"}, args...)...))
}

// started lists the names of the nodes that ran.
func (jb jsonBuild) started() []string {
	var out []string
	for _, ev := range jb.events {
		if ev.Kind == executor.EventStarted {
			out = append(out, ev.Name)
		}
	}
	return out
}

func (jb jsonBuild) artifact(t *testing.T, name string) executor.Artifact {
	t.Helper()
	for _, a := range jb.result.Artifacts {
		if a.Name == name {
			return a
		}
	}
	t.Fatalf("no artifact %s in %+v\nstderr: %s", name, jb.result.Artifacts, jb.stderr)
	return executor.Artifact{}
}

// writeWS makes a workspace with the given CUE source.
func writeWS(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "cue.mod"), 0o755); err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "cue.mod", "module.cue"), []byte("module: \"example.com/test\"\nlanguage: version: \"v0.17.1\"\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "ws.cue"), []byte(src), 0o644))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// copyMinimal copies examples/minimal into a temp dir.
func copyMinimal(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	out, err := exec.Command("cp", "-r", "../../examples/minimal/.", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	must(t, err)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func TestBuildMinimalExec(t *testing.T) {
	ws := copyMinimal(t)
	cache := t.TempDir()
	jb := buildJSON(t, ws, cache)
	if jb.code != 0 || !jb.ok {
		t.Fatalf("build: exit %d\n%s", jb.code, jb.stdout+jb.stderr)
	}
	if got := len(jb.started()); got != 6 {
		t.Errorf("cold build started %d nodes, want 6: %v", got, jb.started())
	}
	tarA := jb.artifact(t, "minimal.tar")
	sqA := jb.artifact(t, "minimal.squashfs")
	if got := fileSHA(t, tarA.Path); got != string(tarA.Digest) {
		t.Errorf("tar at %s has digest %s, result says %s", tarA.Path, got, tarA.Digest)
	}
	list, err := exec.Command("tar", "-tvf", tarA.Path).Output()
	must(t, err)
	for _, want := range []string{" bin/busybox\n", " home/admin/\n"} {
		if !strings.Contains(string(list), want) {
			t.Errorf("tar lacks %q", want)
		}
	}
	hostname, err := exec.Command("tar", "-xOf", tarA.Path, "etc/hostname").Output()
	must(t, err)
	if string(hostname) != "minimal\n" {
		t.Errorf("etc/hostname = %q", hostname)
	}
	passwd, err := exec.Command("tar", "-xOf", tarA.Path, "etc/passwd").Output()
	must(t, err)
	if !strings.Contains(string(passwd), "\nadmin:") && !strings.HasPrefix(string(passwd), "admin:") {
		t.Errorf("etc/passwd has no admin:\n%s", passwd)
	}
	sq, err := exec.Command("unsquashfs", "-lln", sqA.Path).Output()
	must(t, err)
	if !strings.Contains(string(sq), "squashfs-root/bin/busybox\n") {
		t.Errorf("squashfs lacks bin/busybox:\n%.500s", sq)
	}

	// A second build is fully cached: nothing starts.
	jb2 := buildJSON(t, ws, cache)
	if jb2.code != 0 || len(jb2.started()) != 0 || jb2.result.Cached != 6 {
		t.Errorf("second build: exit %d, started %v, cached %d", jb2.code, jb2.started(), jb2.result.Cached)
	}
	if a := jb2.artifact(t, "minimal.tar"); a.Digest != tarA.Digest {
		t.Errorf("cached tar digest %s != %s", a.Digest, tarA.Digest)
	}
	if r := runCLI(t, ws, cache, "explain", "images.minimal.stages[2]"); !strings.Contains(r.stdout, "cached") {
		t.Errorf("explain of a cached node: %q %q", r.stdout, r.stderr)
	}
	// logs and explain take an image and an output node too.
	if r := runCLI(t, ws, cache, "logs", "minimal"); r.code != 0 || !strings.Contains(r.stdout, "==> images.minimal.stages[3] <==") {
		t.Errorf("logs of an image: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, ws, cache, "explain", "minimal", "images.minimal.outputs[1]"); r.code != 0 ||
		!strings.Contains(r.stdout, "images.minimal.stages[0]: cached") || !strings.Contains(r.stdout, "images.minimal.outputs[1]: cached") {
		t.Errorf("explain of an image and an output: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Changing one stage option rebuilds exactly that stage and what follows it.
	src, err := os.ReadFile(filepath.Join(ws, "minimal.cue"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(ws, "minimal.cue"), bytes.Replace(src, []byte(`hostname: "minimal"`), []byte(`hostname: "changed"`), 1), 0o644))
	if r := runCLI(t, ws, cache, "explain", "images.minimal.stages[2]"); !strings.Contains(r.stdout, `options.hostname: "minimal" → "changed"`) {
		t.Errorf("explain after the change: %q %q", r.stdout, r.stderr)
	}
	jb3 := buildJSON(t, ws, cache, "--explain")
	want := []string{"images.minimal.stages[2]", "images.minimal.stages[3]", "images.minimal.outputs[0]", "images.minimal.outputs[1]"}
	got := jb3.started()
	if strings.Join(sorted(got), ",") != strings.Join(sorted(want), ",") {
		t.Errorf("after changing the hostname, started %v, want %v", got, want)
	}
	var explained bool
	for _, ev := range jb3.events {
		if ev.Kind == executor.EventExplain && ev.Name == "images.minimal.stages[2]" && strings.Contains(ev.Line, "options.hostname") {
			explained = true
		}
	}
	if !explained {
		t.Errorf("--explain gave no explanation naming options.hostname")
	}
	hostname, err = exec.Command("tar", "-xOf", jb3.artifact(t, "minimal.tar").Path, "etc/hostname").Output()
	must(t, err)
	if string(hostname) != "changed\n" {
		t.Errorf("etc/hostname after change = %q", hostname)
	}
	if r := runCLI(t, ws, cache, "cache", "verify"); r.code != 0 {
		t.Errorf("cache verify: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, ws, cache, "cache", "ls"); !strings.Contains(r.stdout, "images.minimal.stages[2]") {
		t.Errorf("cache ls: %s", r.stdout)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestBuildPlanJSONExec(t *testing.T) {
	ws := copyMinimal(t)
	planFile := filepath.Join(t.TempDir(), "plan.json")
	if r := runCLI(t, ws, t.TempDir(), "compile", "-o", planFile); r.code != 0 {
		t.Fatalf("compile: %s", r.stderr)
	}
	fromDir := buildJSON(t, ws, t.TempDir())
	fromPlan := parseJSONBuild(t, runCLI(t, "", t.TempDir(), "--output", "json", "build", "--out-dir", t.TempDir(), planFile))
	if fromDir.code != 0 || fromPlan.code != 0 {
		t.Fatalf("builds: %d %d\n%s\n%s", fromDir.code, fromPlan.code, fromDir.stderr, fromPlan.stderr)
	}
	ids := func(jb jsonBuild) string {
		var s []string
		for _, n := range jb.result.Nodes {
			s = append(s, n.Name+"="+n.ID)
		}
		return strings.Join(s, "\n")
	}
	if ids(fromDir) != ids(fromPlan) {
		t.Errorf("node IDs differ:\n%s\n--\n%s", ids(fromDir), ids(fromPlan))
	}
	for _, name := range []string{"minimal.tar", "minimal.squashfs"} {
		if a, b := fromDir.artifact(t, name), fromPlan.artifact(t, name); a.Digest != b.Digest {
			t.Errorf("%s: %s from DIR, %s from plan.json", name, a.Digest, b.Digest)
		}
	}
}

const reproWS = `package test

images: repro: {
	version: "1.0.0"
	stages: [
		{type: "strata.files", options: {
			dirs: "/srv/data": {mode: 0o750}
			files: {
				"/etc/motd": content: "reproducible\n"
				"/srv/data/blob": {content: "0123456789", mode: 0o600}
				"/usr/bin/tool": {content: "#!/bin/sh\necho tool\n", mode: 0o755}
			}
			symlinks: "/bin/tool": "/usr/bin/tool"
		}},
	]
	outputs: [{type: "tar"}, {type: "tar.zst"}, {type: "squashfs"}, {type: "ext4"}, {type: "erofs"}, {type: "oci"}, {type: "tree"}]
	hooks: ["list"]
}

hooks: list: {
	on: "post-build"
	command: ["/bin/sh", "-c", "ls /run/strata/outputs"]
}
`

func TestReproducibleOutputsExec(t *testing.T) {
	ws := writeWS(t, reproWS)
	a := buildJSON(t, ws, t.TempDir())
	b := buildJSON(t, ws, t.TempDir())
	if a.code != 0 || b.code != 0 {
		t.Fatalf("builds: %d %d\n%s\n%s", a.code, b.code, a.stdout+a.stderr, b.stderr)
	}
	if len(a.result.Artifacts) != 7 {
		t.Fatalf("artifacts: %+v", a.result.Artifacts)
	}
	for _, x := range a.result.Artifacts {
		y := b.artifact(t, x.Name)
		if x.Digest != y.Digest || x.Digest == "" {
			t.Errorf("%s: %s vs %s", x.Name, x.Digest, y.Digest)
		}
		switch x.Format {
		case "oci":
			if _, err := os.Stat(filepath.Join(x.Path, "index.json")); err != nil {
				t.Errorf("oci layout: %v", err)
			}
		case "tree":
			if _, err := os.Stat(filepath.Join(x.Path, "etc", "motd")); err != nil {
				t.Errorf("tree output: %v", err)
			}
		default:
			if got := fileSHA(t, x.Path); got != string(x.Digest) || fileSHA(t, y.Path) != got {
				t.Errorf("%s: file digests %s / %s, result %s", x.Name, got, fileSHA(t, y.Path), x.Digest)
			}
		}
	}
	// The post-build hook saw every output read-only under /run/strata/outputs.
	r := runCLI(t, ws, "", "logs", "hooks.list")
	_ = r
	var hookLog []string
	for _, ev := range a.events {
		if ev.Kind == executor.EventLog && ev.Name == "hooks.list" {
			hookLog = append(hookLog, ev.Line)
		}
	}
	if len(hookLog) != 7 || !strings.Contains(strings.Join(hookLog, " "), "repro.squashfs") {
		t.Errorf("hook saw %v", hookLog)
	}
}

func TestSandboxIsolationExec(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	ws := writeWS(t, fmt.Sprintf(`package test

stages: "test.escape": {
	options: {}
	command: ["/bin/sh", "-c", "echo pwned > /usr/pwned-by-strata-test"]
}
stages: "test.connect": {
	options: {}
	command: ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/%d && echo connected"]
}

images: escape: {version: "1", stages: [{type: "test.escape"}]}
images: offline: {version: "1", stages: [{type: "test.connect"}]}
images: online: {version: "1", stages: [{type: "test.connect", network: true}]}
`, port))
	cache := t.TempDir()
	r := runCLI(t, ws, cache, "build", "escape")
	if r.code != 1 || !strings.Contains(r.stderr, "images.escape.stages[0]") {
		t.Errorf("writing to the build root: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat("/usr/pwned-by-strata-test"); err == nil {
		os.Remove("/usr/pwned-by-strata-test")
		t.Fatal("a stage wrote to the host's /usr")
	}
	if r := runCLI(t, ws, cache, "build", "offline"); r.code != 1 {
		t.Errorf("connect without network: exit %d (want failure)\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, ws, cache, "build", "online"); r.code != 0 {
		t.Errorf("connect with network: true: exit %d\n%s", r.code, r.stderr)
	}
}

func TestBuildFailureExec(t *testing.T) {
	ws := writeWS(t, `package test

images: bad: {
	version: "1"
	stages: [
		{type: "strata.run", options: command: ["/bin/sh", "-c", "echo first line; echo boom >&2; exit 3"]},
	]
	outputs: [{type: "tar"}]
}
images: good: {
	version: "1"
	stages: [{type: "strata.hostname", options: hostname: "good"}]
	outputs: [{type: "tar"}]
}
`)
	cache := t.TempDir()
	r := runCLI(t, ws, cache, "-j", "1", "build")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"images.bad.stages[0]", "ws.cue:6:3", "exit status 3", "boom", "first line"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("error lacks %q:\n%s", want, r.stderr)
		}
	}
	if r := runCLI(t, ws, cache, "logs", "images.bad.stages[0]"); r.stdout != "first line\nboom\n" {
		t.Errorf("logs of the failed stage: %q %s", r.stdout, r.stderr)
	}
	var doc struct {
		Logs []struct{ Name, Origin, Log string }
	}
	r = runCLI(t, ws, cache, "--output", "json", "logs", "images.bad.stages[0]")
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Logs) != 1 || doc.Logs[0].Log != "first line\nboom\n" || doc.Logs[0].Origin != "ws.cue:6:3" {
		t.Errorf("logs --output json: %+v, %v\n%s", doc, err, r.stdout)
	}
	jb := buildJSON(t, ws, cache, "--keep-going", "-j", "1")
	if jb.code != 1 {
		t.Errorf("--keep-going exit %d", jb.code)
	}
	a := jb.artifact(t, "good.tar")
	if _, err := os.Stat(a.Path); err != nil {
		t.Errorf("--keep-going did not build the independent image: %v", err)
	}
}

const slowWS = `package test

images: slow: {
	version: "1"
	stages: [
		{type: "strata.hostname", options: hostname: "slow"},
		{type: "strata.run", options: command: ["/bin/sh", "-c", "echo sleeping; exec sleep %s"]},
	]
	outputs: [{type: "tar"}]
}
`

// sleepers returns the pids of processes running "sleep ARG".
func sleepers(arg string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && string(b) == "sleep\x00"+arg+"\x00" {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitNoSleepers(t *testing.T, arg string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // liveness, not speed
	for len(sleepers(arg)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("orphan stage processes left: %v", sleepers(arg))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startUntilSleeping starts a JSON build and returns once the slow stage runs.
func startUntilSleeping(t *testing.T, ws, cache, arg string) *exec.Cmd {
	t.Helper()
	cmd := strataCmd(t, ws, cache, "--output", "json", "build")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StderrPipe()
	must(t, err)
	must(t, cmd.Start())
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"line":"sleeping"`) {
			break
		}
	}
	go io.Copy(io.Discard, out)
	deadline := time.Now().Add(time.Minute) // liveness, not speed
	for len(sleepers(arg)) == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the slow stage never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cmd
}

func TestKillAndCorruptionExec(t *testing.T) {
	arg := "2.71"
	ws := writeWS(t, fmt.Sprintf(slowWS, arg))
	cache := t.TempDir()
	cmd := startUntilSleeping(t, ws, cache, arg)
	must(t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()
	waitNoSleepers(t, arg)

	jb := buildJSON(t, ws, cache)
	if jb.code != 0 {
		t.Fatalf("rerun after kill -9: exit %d: %s\n%s", jb.code, jb.errText, jb.stderr)
	}
	if got := jb.started(); len(got) != 2 {
		t.Errorf("rerun started %v, want the slow stage and the output (the first stage was cached)", got)
	}
	if ents, _ := filepath.Glob(filepath.Join(cache, "tmp", "s-*")); len(ents) != 0 {
		t.Errorf("session directories left behind: %v", ents)
	}
	if r := runCLI(t, ws, cache, "cache", "verify"); r.code != 0 || !strings.Contains(r.stdout, "clean") {
		t.Errorf("verify after kill: exit %d %s", r.code, r.stdout)
	}

	// Flip a byte of the stored tar: verify reports it and a rebuild recreates it.
	tar := jb.artifact(t, "slow.tar")
	hexd := strings.TrimPrefix(string(tar.Digest), "sha256:")
	blob := filepath.Join(cache, "blobs", "sha256", hexd[:2], hexd)
	b, err := os.ReadFile(blob)
	must(t, err)
	b[len(b)/2] ^= 0xff
	must(t, os.Chmod(blob, 0o644))
	must(t, os.WriteFile(blob, b, 0o444))
	r := runCLI(t, ws, cache, "cache", "verify")
	if r.code != 1 || !strings.Contains(r.stdout, "corrupt") {
		t.Errorf("verify of a flipped byte: exit %d\n%s", r.code, r.stdout)
	}
	jb2 := buildJSON(t, ws, cache, "images.slow.outputs[0]")
	if jb2.code != 0 {
		t.Fatalf("rebuild after corruption: %s", jb2.stderr)
	}
	if a := jb2.artifact(t, "slow.tar"); a.Digest != tar.Digest || fileSHA(t, a.Path) != string(tar.Digest) {
		t.Errorf("rebuilt tar %s (file %s), want %s", a.Digest, fileSHA(t, a.Path), tar.Digest)
	}
}

func TestInterruptExec(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
		arg  string
	}{{syscall.SIGINT, 130, "3.14"}, {syscall.SIGTERM, 143, "3.15"}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			ws := writeWS(t, fmt.Sprintf(slowWS, tc.arg))
			cache := t.TempDir()
			cmd := startUntilSleeping(t, ws, cache, tc.arg)
			// Ctrl-C goes to the whole foreground process group.
			must(t, syscall.Kill(-cmd.Process.Pid, tc.sig))
			err := cmd.Wait()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != tc.code {
				t.Errorf("exit after %v: %v, want %d", tc.sig, err, tc.code)
			}
			waitNoSleepers(t, tc.arg)
			if r := runCLI(t, ws, cache, "cache", "verify"); r.code != 0 {
				t.Errorf("verify: %s", r.stdout)
			}
			jb := buildJSON(t, ws, cache)
			if jb.code != 0 {
				t.Fatalf("rerun: %s", jb.stderr)
			}
			for _, n := range jb.started() {
				if n == "images.slow.stages[0]" {
					t.Errorf("rerun rebuilt the stage that finished before the signal")
				}
			}
		})
	}
}

func TestConcurrentBuildsExec(t *testing.T) {
	ws := writeWS(t, `package test

images: a: {
	version: "1"
	stages: [
		{type: "strata.hostname", options: hostname: "a"},
		{type: "strata.run", options: command: ["/bin/sh", "-c", "sleep 0.3; echo a > /run/strata/tree/a"]},
	]
	outputs: [{type: "tar"}]
}
images: b: {
	version: "1"
	from: "images.a"
	stages: [{type: "strata.run", options: command: ["/bin/sh", "-c", "sleep 0.2; echo b > /run/strata/tree/b"]}]
	outputs: [{type: "squashfs"}]
}
`)
	cache := t.TempDir()
	// Compile once so that both processes do not race on the compile cache first.
	runCLI(t, ws, cache, "compile", "-o", filepath.Join(t.TempDir(), "p.json"))
	var wg sync.WaitGroup
	res := make([]jsonBuild, 2)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = buildJSON(t, ws, cache, "-j", "2")
		}()
	}
	wg.Wait()
	count := map[string]int{}
	for i, jb := range res {
		if jb.code != 0 {
			t.Fatalf("build %d: exit %d\n%s", i, jb.code, jb.stderr)
		}
		for _, n := range jb.started() {
			count[n]++
		}
	}
	for _, n := range []string{"images.a.stages[0]", "images.a.stages[1]", "images.b.stages[0]", "images.a.outputs[0]", "images.b.outputs[0]"} {
		if count[n] != 1 {
			t.Errorf("%s started %d times across both builds, want 1", n, count[n])
		}
	}
	if res[0].artifact(t, "b.squashfs").Digest != res[1].artifact(t, "b.squashfs").Digest {
		t.Error("the two builds disagree on b.squashfs")
	}
}

func TestLogCompleteExec(t *testing.T) {
	const n = 50
	var b strings.Builder
	b.WriteString("package test\n\nimages: logs: {\n\tversion: \"1\"\n\tstages: [\n")
	for i := 0; i < n; i++ {
		// 1024 lines of 1024 bytes (1023 + newline), then exit at once.
		fmt.Fprintf(&b, "\t\t{type: \"strata.run\", options: command: [\"/bin/sh\", \"-c\", \"yes $(printf %%01023d %d) | head -c 1048576\"]},\n", i)
	}
	b.WriteString("\t]\n}\n")
	ws := writeWS(t, b.String())
	cache := t.TempDir()
	jb := buildJSON(t, ws, cache)
	if jb.code != 0 {
		t.Fatalf("exit %d\n%s", jb.code, jb.stderr)
	}
	bytesPerNode := map[string]int{}
	done := map[string]bool{}
	for _, ev := range jb.events {
		switch ev.Kind {
		case executor.EventLog:
			if done[ev.Name] {
				t.Fatalf("%s: log line after its done event", ev.Name)
			}
			bytesPerNode[ev.Name] += len(ev.Line) + 1
		case executor.EventDone:
			done[ev.Name] = true
		}
	}
	stages := 0
	for _, nr := range jb.result.Nodes {
		if nr.Kind != "stage" {
			continue
		}
		stages++
		if bytesPerNode[nr.Name] != 1<<20 {
			t.Errorf("%s: %d log bytes in events, want 1 MiB", nr.Name, bytesPerNode[nr.Name])
		}
		hexd := strings.TrimPrefix(string(nr.Log), "sha256:")
		info, err := os.Stat(filepath.Join(cache, "blobs", "sha256", hexd[:2], hexd))
		if err != nil || info.Size() != 1<<20 {
			t.Errorf("%s: stored log %v %v, want 1 MiB", nr.Name, info, err)
		}
	}
	if stages != n {
		t.Errorf("%d stages", stages)
	}
}

func TestSourcesExec(t *testing.T) {
	dl := filepath.Join(t.TempDir(), "payload.bin")
	must(t, os.WriteFile(dl, []byte("downloaded\n"), 0o644))
	sum := sha256.Sum256([]byte("downloaded\n"))
	src := fmt.Sprintf(`package test

sources: conf: path: "files"
sources: one: path: "single.txt"
sources: dl: {url: "file://%s", sha256: "%s"}

images: src: {
	version: "1"
	stages: [{
		type: "strata.run"
		inputs: {conf: "sources.conf", one: "sources.one", dl: "sources.dl"}
		options: command: ["/bin/sh", "-c", "cp -r /run/strata/inputs/conf /run/strata/tree/conf && cp /run/strata/inputs/one /run/strata/inputs/dl /run/strata/tree/"]
	}]
	outputs: [{type: "tar"}]
}
`, dl, hex.EncodeToString(sum[:]))
	ws := writeWS(t, src)
	must(t, os.MkdirAll(filepath.Join(ws, "files", "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(ws, "files", "sub", "a.conf"), []byte("a=1\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(ws, "single.txt"), []byte("single\n"), 0o755))
	cache := t.TempDir()
	jb := buildJSON(t, ws, cache)
	if jb.code != 0 {
		t.Fatalf("exit %d\n%s", jb.code, jb.stdout+jb.stderr)
	}
	list, err := exec.Command("tar", "-tvf", jb.artifact(t, "src.tar").Path).Output()
	must(t, err)
	for _, want := range []string{" conf/sub/a.conf\n", " one\n", " dl\n"} {
		if !strings.Contains(string(list), want) {
			t.Errorf("tar lacks %q:\n%s", want, list)
		}
	}

	// A path source edited after compile fails clearly when building the plan file.
	planFile := filepath.Join(t.TempDir(), "plan.json")
	if r := runCLI(t, ws, cache, "compile", "-o", planFile); r.code != 0 {
		t.Fatal(r.stderr)
	}
	must(t, os.WriteFile(filepath.Join(ws, "single.txt"), []byte("edited\n"), 0o755))
	r := runCLI(t, ws, t.TempDir(), "build", planFile)
	if r.code != 1 || !strings.Contains(r.stderr, "source changed since compile") {
		t.Errorf("changed source: exit %d\n%s", r.code, r.stderr)
	}

	// A file:// url whose bytes do not match its sha256 names the source and
	// the expected digest, never the host file's actual digest (an oracle for
	// any file strata can read).
	must(t, os.WriteFile(dl, []byte("tampered\n"), 0o644))
	cache2 := t.TempDir()
	r = runCLI(t, ws, cache2, "build", "sources.dl")
	bad := sha256.Sum256([]byte("tampered\n"))
	for _, want := range []string{"sources.dl", hex.EncodeToString(sum[:]), "does not have sha256"} {
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("digest mismatch: exit %d, error lacks %q:\n%s", r.code, want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, hex.EncodeToString(bad[:])) {
		t.Errorf("the error tells the host file's digest:\n%s", r.stderr)
	}
	if ents, _ := os.ReadDir(filepath.Join(cache2, "actions")); len(ents) != 0 {
		t.Errorf("a mismatching source was recorded: %v", ents)
	}
}

// TestCopyStagingExec: where overlayfs cannot be used (forced here with
// STRATA_STAGING=copy) a build says so and still gives byte-identical outputs.
func TestCopyStagingExec(t *testing.T) {
	ws := copyMinimal(t)
	overlay := buildJSON(t, ws, t.TempDir())
	if overlay.code != 0 {
		t.Fatalf("overlay build: exit %d\n%s", overlay.code, overlay.stderr)
	}
	cmd := strataCmd(t, ws, t.TempDir(), "build")
	cmd.Env = append(cmd.Env, "STRATA_STAGING=copy")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("copy-staged build: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "copy staging (STRATA_STAGING=copy)") {
		t.Errorf("the build does not say it uses copy staging:\n%s", out)
	}
	for _, name := range []string{"minimal.tar", "minimal.squashfs"} {
		a := overlay.artifact(t, name)
		if !strings.Contains(string(out), a.Digest.String()) {
			t.Errorf("%s: copy staging gave a different digest than overlay staging (%s)\n%s", name, a.Digest, out)
		}
	}
}

// TestConcurrentBuildWaitsExec: a second build of a workspace while the first
// runs a slow stage waits for that key instead of building it again, says
// whom it waits for, and then uses the first build's result.
func TestConcurrentBuildWaitsExec(t *testing.T) {
	arg := "1.61"
	ws := writeWS(t, fmt.Sprintf(slowWS, arg))
	cache := t.TempDir()
	first := strataCmd(t, ws, cache, "--output", "json", "build")
	errPipe, err := first.StderrPipe()
	must(t, err)
	var firstOut bytes.Buffer
	first.Stdout = &firstOut
	must(t, first.Start())
	sc := bufio.NewScanner(errPipe)
	for sc.Scan() && !strings.Contains(sc.Text(), `"line":"sleeping"`) {
	}
	go io.Copy(io.Discard, errPipe)
	second := buildJSON(t, ws, cache)
	must(t, first.Wait())
	if second.code != 0 {
		t.Fatalf("second build: exit %d: %s", second.code, second.errText)
	}
	var waited bool
	for _, ev := range second.events {
		if ev.Kind == executor.EventWaiting && ev.Name == "images.slow.stages[1]" &&
			strings.Contains(ev.Line, fmt.Sprintf("waiting for another strata process (pid %d)", first.Process.Pid)) {
			waited = true
		}
	}
	if !waited {
		t.Errorf("the second build did not say it waited for pid %d:\n%s", first.Process.Pid, second.stderr)
	}
	for _, name := range second.started() {
		if strings.Contains(name, "stages") {
			t.Errorf("the second build ran %s, which the first built", name)
		}
	}
}

// TestBrokenBwrapExec: builds do not run bwrap to probe it, so a bwrap that
// cannot make a sandbox is reported by the first stage: its own message, a
// pointer to strata doctor, exit 1, and no probe results kept for the next
// build to trust.
func TestBrokenBwrapExec(t *testing.T) {
	bin := t.TempDir()
	must(t, os.WriteFile(filepath.Join(bin, "bwrap"), []byte(`#!/bin/sh
[ "$1" = --version ] && { echo "bubblewrap 0.8.0"; exit 0; }
echo "bwrap: No permissions to create new namespace" >&2
exit 1
`), 0o755))
	cache := t.TempDir()
	ws := writeWS(t, `package test
images: img: {
	version: "1"
	stages: [{type: "strata.run", options: command: ["/bin/true"]}]
}
`)
	cmd := strataCmd(t, ws, cache, "build")
	cmd.Env = append(cmd.Env, "PATH="+bin+":"+os.Getenv("PATH"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("build with a broken bwrap: %v, want exit 1\n%s", err, stderr.String())
	}
	for _, want := range []string{"images.img.stages[0]", "bwrap: No permissions to create new namespace", "(see strata doctor)"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	if _, err := os.Stat(filepath.Join(cache, "state", "sandbox", "host.json")); !os.IsNotExist(err) {
		t.Errorf("probe results kept after the sandbox failed to set up: %v", err)
	}
}

// TestPathSourceModesExec: a path source keeps only the executable bit of its
// entries (0755 or 0644, directories 0755), which is all its key holds: with
// every bit kept, a chmod 0700 of a source file stayed cached with the old
// mode, and a clean cache gave another tree for the same key.
func TestPathSourceModesExec(t *testing.T) {
	ws := writeWS(t, `package test
sources: data: path: "data"
images: img: {
	version: "1"
	stages: [{type: "strata.copy", options: {input: "d", dst: "/d"}, inputs: d: "sources.data"}]
	outputs: [{type: "tree"}]
}
`)
	data := filepath.Join(ws, "data")
	must(t, os.MkdirAll(filepath.Join(data, "sub"), 0o755))
	for name, mode := range map[string]os.FileMode{"plain": 0o644, "tool": 0o755, "sub/f": 0o644} {
		must(t, os.WriteFile(filepath.Join(data, name), []byte(name+"\n"), 0o644))
		must(t, os.Chmod(filepath.Join(data, name), mode))
	}
	modes := func(cache string) map[string]os.FileMode {
		t.Helper()
		if r := runCLI(t, ws, cache, "build"); r.code != 0 {
			t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
		}
		got := map[string]os.FileMode{}
		for _, name := range []string{"plain", "tool", "sub", "sub/f"} {
			fi, err := os.Lstat(filepath.Join(ws, "out", "img", "img.tree", "d", name))
			must(t, err)
			got[name] = fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
		}
		return got
	}
	want := map[string]os.FileMode{"plain": 0o644, "tool": 0o755, "sub": 0o755, "sub/f": 0o644}
	cache := t.TempDir()
	if got := modes(cache); !maps.Equal(got, want) {
		t.Errorf("modes %v, want %v", got, want)
	}
	// Bits the key does not hold change nothing, in this cache or a clean one.
	must(t, os.Chmod(filepath.Join(data, "plain"), 0o600))
	must(t, os.Chmod(filepath.Join(data, "tool"), 0o4711))
	must(t, os.Chmod(filepath.Join(data, "sub"), 0o700))
	if got := modes(cache); !maps.Equal(got, want) {
		t.Errorf("after chmod, cached: modes %v, want %v", got, want)
	}
	if got := modes(t.TempDir()); !maps.Equal(got, want) {
		t.Errorf("after chmod, clean cache: modes %v, want %v", got, want)
	}
}

// TestPreBuildHookEveryBuildExec: a pre-build hook is a step of every build,
// like the cleanup hook that undoes it (a lab's lease taken and released):
// cached, it ran once ever while its cleanup ran every time.
func TestPreBuildHookEveryBuildExec(t *testing.T) {
	ws := writeWS(t, `package test
images: img: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/a": content: "a"}]
	hooks: ["take", "release"]
}
hooks: take: {on: "pre-build", command: ["true"]}
hooks: release: {on: "cleanup", command: ["true"]}
`)
	cache := t.TempDir()
	for i := range 2 {
		r := runCLI(t, ws, cache, "build")
		if r.code != 0 {
			t.Fatalf("build %d: exit %d\n%s", i, r.code, r.stderr)
		}
		for _, hook := range []string{"hooks.take", "hooks.release"} {
			if !strings.Contains(r.stderr, "started "+hook) || strings.Contains(r.stderr, "cached  "+hook) {
				t.Errorf("build %d: %s did not run:\n%s", i, hook, r.stderr)
			}
		}
	}
}

// TestPathSourceLinkToFileExec: a path source naming a link to a file in the
// workspace (data.txt -> real.txt) is that file; kept as a link it named
// nothing in the sandbox and the stage failed with "No such file". A link
// leading out of the workspace is refused at compile, at the source.
func TestPathSourceLinkToFileExec(t *testing.T) {
	ws := writeWS(t, `package test
sources: data: path: "data.txt"
images: img: {
	version: "1"
	stages: [{type: "strata.run", inputs: d: "sources.data", options: command: ["/bin/sh", "-c", "cat /run/strata/inputs/d > /run/strata/tree/copied"]}]
	outputs: [{type: "tree"}]
}
`)
	must(t, os.WriteFile(filepath.Join(ws, "real.txt"), []byte("real\n"), 0o644))
	must(t, os.Symlink("real.txt", filepath.Join(ws, "data.txt")))
	if r := runCLI(t, ws, t.TempDir(), "build"); r.code != 0 {
		t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "out", "img", "img.tree", "copied")); string(b) != "real\n" {
		t.Errorf("the stage read %q", b)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	must(t, os.WriteFile(secret, []byte("secret\n"), 0o644))
	must(t, os.Remove(filepath.Join(ws, "data.txt")))
	must(t, os.Symlink(secret, filepath.Join(ws, "data.txt")))
	if r := runCLI(t, ws, t.TempDir(), "build"); r.code == 0 || !strings.Contains(r.stderr, "sources.data.path") || !strings.Contains(r.stderr, "symbolic link to nothing inside the workspace") {
		t.Errorf("build with a source linking out of the workspace: exit %d\n%s", r.code, r.stderr)
	}
}
