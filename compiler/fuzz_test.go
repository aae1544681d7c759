package compiler_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/lang"
)

var fuzzHost = plan.Host{OS: "fuzzos", OSVersion: "1", Arch: "amd64", StrataVersion: "fuzz"}

const fuzzModuleCUE = "module: \"example.com/fuzz\"\nlanguage: version: \"v0.17.1\"\n"

// fuzzCompileSeeds are workspaces that load, covering every kind of node.
var fuzzCompileSeeds = []string{
	`package p

sources: conf: path: "conf"
sources: tarball: {url: "https://example.com/x.tar.gz", sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
sources: repo: {git: "https://example.com/r.git", commit: "0123456789abcdef0123456789abcdef01234567"}

stages: "acme.touch": {
	options: {name: string, mode: int | *420}
	command: ["/bin/sh", "-c", "touch /run/strata/tree/\(options.name)"]
	buildroot: "images.sdk"
}

images: sdk: {version: "1", stages: [{type: "strata.busybox"}]}
images: base: {
	version:   "1"
	buildroot: "images.sdk"
	stages: [
		{type: "strata.copy", options: input: "c", inputs: c: "sources.conf"},
		{type: "acme.touch", options: name: "x"},
		{type: "strata.extract", options: input: "t", inputs: t: "sources.tarball"},
	]
	outputs: [{type: "tar"}, {type: "ext4", size: 1024}]
	hooks: ["lint", "gate"]
	publish: {repository: "r/base", tags: ["1"]}
}
images: app: {
	version: "1"
	from:    "images.base"
	stages: [{type: "strata.files", options: files: "/etc/app": content: "x"}]
	runtime: ["images.sdk"]
	requires: {arch: "amd64", features: ["kvm"]}
}
hooks: lint: {on: "post-build", command: ["true"], on_failure: "warn"}
hooks: gate: {on: "pre-publish", buildroot: "images.sdk", command: ["true"]}
hooks: pre: {on: "pre-build", command: ["true"]}
hooks: clean: {on: "cleanup", command: ["true"]}
jobs: test: {image: "images.app", command: ["true"], outputs: ["report"]}
jobs: report: {buildroot: "images.sdk", command: ["true"], needs: ["jobs.test", "images.base"], network: true}
`,
	`package p

resources: boards: [{name: "a", arch: "amd64"}, {name: "b", arch: "arm64"}, {name: "c", arch: "amd64"}]
templates: per_board: {
	resource: "boards"
	each: {
		b:  _
		if: b.arch == "amd64"
		images: "img-\(b.name)": {
			version: "1"
			platform: arch: b.arch
			stages: [{type: "strata.hostname", options: hostname: b.name}]
		}
		jobs: "test-\(b.name)": {image: "images.img-\(b.name)", command: ["echo", b.name]}
	}
}
`,
	`package p

resources: devices: {job: "probe", schema: {name: string, category: "CDROM" | "DISK"}}
jobs: probe: command: ["/bin/sh", "-c", "echo '{}' > /run/strata/out/records.jsonl"]
templates: "optical-read": {
	resource: "devices"
	each: {
		device: _
		if: device.category == "CDROM"
		jobs: "optical/read_\(device.name)": {command: ["true"], needs: ["jobs.probe"]}
	}
}
`,
	"package p\n\nimages: a: {version: \"1\", stages: []}\n",
	"package p\n",
}

// FuzzCompile loads a fuzzed workspace; when it loads, compiling it must not panic,
// must give the same bytes twice, and the plan must survive Decode(Encode(p)).
func FuzzCompile(f *testing.F) {
	for _, s := range fuzzCompileSeeds {
		f.Add(s)
	}
	for _, pat := range []string{"../examples/*/*.cue"} {
		files, _ := filepath.Glob(pat)
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(string(b))
		}
	}
	f.Fuzz(func(t *testing.T, src string) {
		dir := t.TempDir()
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.MkdirAll(filepath.Join(dir, "cue.mod"), 0o755))
		must(os.MkdirAll(filepath.Join(dir, "conf"), 0o755))
		must(os.WriteFile(filepath.Join(dir, "conf", "a.conf"), []byte("a=1\n"), 0o644))
		must(os.WriteFile(filepath.Join(dir, "cue.mod", "module.cue"), []byte(fuzzModuleCUE), 0o644))
		must(os.WriteFile(filepath.Join(dir, "main.cue"), []byte(src), 0o644))

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ws, err := fuzzGuard(t, func() (*lang.Workspace, error) { return lang.Load(ctx, dir) })
		if err != nil {
			return // FuzzLoad in lang checks the errors
		}
		p1, err1 := fuzzGuard(t, func() (*plan.Plan, error) { return compiler.Compile(ctx, ws, compiler.Options{Host: fuzzHost}) })
		p2, err2 := fuzzGuard(t, func() (*plan.Plan, error) { return compiler.Compile(ctx, ws, compiler.Options{Host: fuzzHost}) })
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("compile is not deterministic: %v / %v", err1, err2)
		}
		if err1 != nil {
			if errors.Is(err1, context.DeadlineExceeded) {
				t.Fatalf("compile did not finish in time")
			}
			return // e.g. a path source that does not exist
		}
		b1, b2 := fuzzEncode(t, p1), fuzzEncode(t, p2)
		if !bytes.Equal(b1, b2) {
			t.Fatalf("compile is not deterministic:\n%s\n---\n%s", b1, b2)
		}
		dec, err := plan.Decode(bytes.NewReader(b1))
		if err != nil {
			t.Fatalf("Decode(Encode(p)): %v\n%s", err, b1)
		}
		if b3 := fuzzEncode(t, dec); !bytes.Equal(b1, b3) {
			t.Fatalf("plan does not round-trip:\n%s\n---\n%s", b1, b3)
		}
		if _, err := plan.Verify(dec, plan.VerifyOptions{Host: fuzzHost}); err != nil {
			t.Fatalf("the compiler's own plan does not verify: %v\n%s", err, b1)
		}
	})
}

// FuzzVerify feeds mutated plan files to Decode and Verify: neither may panic,
// and no accepted plan may hold a node whose key is not the hash of its
// content, an input that is not an edge, or a name unsafe as a path.
func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	writeFuzzWorkspace(f, dir, verifySpec)
	for _, ws := range []string{dir, "../examples/minimal", "../examples/fleet"} {
		w, err := lang.Load(context.Background(), ws)
		if err != nil {
			f.Fatal(err)
		}
		p, err := compiler.Compile(context.Background(), w, compiler.Options{Host: fuzzHost})
		if err != nil {
			f.Fatal(err)
		}
		var buf bytes.Buffer
		if err := p.Encode(&buf); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := plan.Decode(bytes.NewReader(b))
		if err != nil {
			return
		}
		v, err := plan.Verify(p, plan.VerifyOptions{Host: fuzzHost})
		if err != nil {
			if !errors.Is(err, plan.ErrInvalid) && !errors.Is(err, plan.ErrForeignHost) {
				t.Fatalf("error wraps neither ErrInvalid nor ErrForeignHost: %v", err)
			}
			return
		}
		ids := map[string]bool{}
		for _, n := range v.Plan().Nodes {
			doc, err := n.StrongKeyInputs(fuzzHost)
			if err != nil || plan.Hash(doc) != n.ID {
				t.Fatalf("accepted %s whose key is not its content's", n.Name)
			}
			for _, in := range append([]string{n.Inputs.Tree, n.Inputs.BuildRoot}, n.Inputs.After...) {
				if in != "" && in != plan.HostRoot && !ids[in] {
					t.Fatalf("accepted %s with input %s that does not come before it", n.Name, in)
				}
			}
			for _, in := range n.Inputs.Mounts {
				if !ids[in] {
					t.Fatalf("accepted %s with mount %s that does not come before it", n.Name, in)
				}
			}
			ids[n.ID] = true
		}
		for name, img := range v.Plan().Images {
			if plan.CheckName(name) != nil || strings.Contains(name, "..") {
				t.Fatalf("accepted image name %q", name)
			}
			_ = img
		}
		for _, pt := range v.Plan().Pending {
			if n, ok := v.Plan().Node(pt.Node); !ok || n.Kind != plan.KindJob || plan.CheckName(pt.Template) != nil {
				t.Fatalf("accepted pending template %+v that waits on no job of the plan", pt)
			}
		}
	})
}

func writeFuzzWorkspace(f *testing.F, dir, spec string) {
	for _, err := range []error{
		os.MkdirAll(filepath.Join(dir, "cue.mod"), 0o755),
		os.MkdirAll(filepath.Join(dir, "files"), 0o755),
		os.WriteFile(filepath.Join(dir, "cue.mod", "module.cue"), []byte(moduleCUE), 0o644),
		os.WriteFile(filepath.Join(dir, "files", "greeting"), []byte("hi\n"), 0o644),
		os.WriteFile(filepath.Join(dir, "keys.cue"), []byte(spec), 0o644),
	} {
		if err != nil {
			f.Fatal(err)
		}
	}
}

func fuzzEncode(t *testing.T, p *plan.Plan) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := p.Encode(&buf); err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf.Bytes()
}

// fuzzGuard runs f, failing the test on a panic or when f does not return within
// a few seconds (CUE's evaluator cannot be interrupted by a context).
func fuzzGuard[T any](t *testing.T, f func() (T, error)) (T, error) {
	t.Helper()
	type result struct {
		v     T
		err   error
		panic string
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{panic: fmt.Sprintf("%v\n%s", r, debug.Stack())}
			}
		}()
		v, err := f()
		done <- result{v: v, err: err}
	}()
	select {
	case r := <-done:
		if r.panic != "" {
			t.Fatalf("panic: %s", r.panic)
		}
		return r.v, r.err
	case <-time.After(6 * time.Second):
		t.Fatalf("did not return within 6s")
		var zero T
		return zero, nil
	}
}
