package main

import (
	"archive/tar"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/compiler"
	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/sandbox"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/lang"
)

// TestFleetExampleExec builds examples/fleet as a user would: the probe runs
// first and the per-device test template expands over the bench it found; every
// image's outputs pass the lint hook, which runs in the host-tools image, and
// the cleanup hook runs; nothing of host-tools (a build root) is exported; the
// probe runs once. strata test then runs the per-device test jobs, each
// against its device type's image.
func TestFleetExampleExec(t *testing.T) {
	strataBin(t)
	ws, cache := copyWorkspace(t, filepath.Join("..", "..", "examples", "fleet")), t.TempDir()
	jb := buildJSON(t, ws, cache)
	if jb.code != 0 {
		t.Fatalf("build: exit %d: %s\n%s", jb.code, jb.errText, jb.stderr)
	}
	var artifacts []string
	for _, a := range jb.result.Artifacts {
		artifacts = append(artifacts, a.Image+"/"+a.Name)
	}
	want := []string{"base/base.tar.zst",
		"fleet-x86-gateway/fleet-x86-gateway.squashfs", "fleet-x86-gateway/fleet-x86-gateway.oci",
		"fleet-x86-nuc/fleet-x86-nuc.squashfs", "fleet-x86-nuc/fleet-x86-nuc.oci",
		"fleet-x86-thin-client/fleet-x86-thin-client.squashfs", "fleet-x86-thin-client/fleet-x86-thin-client.oci"}
	if d := cmp.Diff(want, artifacts); d != "" {
		t.Errorf("artifacts (-want +got):\n%s", d)
	}
	started := jb.started()
	for _, name := range []string{"jobs.bench/nuc-7", "jobs.bench/thin-3", "jobs.bench/gw-1", "images.fleet-x86-nuc.hooks.lint", "images.fleet-x86-nuc.hooks.cleanup"} {
		if !slices.Contains(started, name) {
			t.Errorf("%s did not run (ran: %v)", name, started)
		}
	}
	probeRuns := 0
	for _, n := range started {
		if n == "jobs.probe" {
			probeRuns++
		}
	}
	if probeRuns != 1 || slices.Contains(started, "jobs.bench/pi-2") {
		t.Errorf("probe ran %d times; ran: %v", probeRuns, started)
	}
	for _, ev := range jb.events {
		if ev.Kind == executor.EventFailed || ev.Kind == executor.EventWarning {
			t.Errorf("%s %s: %s%s", ev.Kind, ev.Name, ev.Error, ev.Line)
		}
	}
	r := runCLI(t, ws, cache, "logs", "images.fleet-x86-nuc.hooks.lint")
	if r.code != 0 || !strings.Contains(r.stdout, "lint: fleet-x86-nuc 2.1.0: fleet-x86-nuc.squashfs ok") {
		t.Errorf("lint log: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = runCLI(t, ws, cache, "--output", "json", "test")
	var doc struct {
		OK   bool
		Jobs []struct{ Name, Status, Log string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 || !doc.OK {
		t.Fatalf("test: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	got := map[string]string{}
	for _, j := range doc.Jobs {
		got[j.Name] = j.Status
		if strings.HasPrefix(j.Name, "jobs.bench/") && !strings.Contains(j.Log, "ok") {
			t.Errorf("%s log: %q", j.Name, j.Log)
		}
	}
	wantJobs := map[string]string{"jobs.probe": "passed", "jobs.bench/nuc-7": "passed", "jobs.bench/thin-3": "passed", "jobs.bench/gw-1": "passed"}
	if d := cmp.Diff(wantJobs, got); d != "" {
		t.Errorf("test report (-want +got):\n%s", d)
	}
}

// crossDeb is the arm64 busybox package examples/cross builds from, which make
// setup (or the example's fetch-busybox.sh) downloads.
const crossDeb = "deps/busybox-static_arm64.deb"

// needCrossDeb skips (fails in CI, where make setup ran) when the package is
// not there.
func needCrossDeb(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join("..", "..", "examples", "cross", crossDeb)); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("examples/cross/%s missing in CI (make setup fetches it): %v", crossDeb, err)
		}
		t.Skipf("examples/cross/%s missing: make setup as root, or examples/cross/fetch-busybox.sh, fetches it", crossDeb)
	}
}

// needArm64 skips, saying why, where this host runs no arm64 code.
func needArm64(t *testing.T) {
	t.Helper()
	host, err := sandbox.Detect(context.Background())
	must(t, err)
	if c := executor.HostCapabilities(host); c.Arch != "arm64" && !slices.Contains(c.Emulated, "arm64") {
		t.Skipf("this host (%s) does not run arm64 code: no qemu-user binfmt_misc entry for aarch64 with the F flag (make setup, as root, installs qemu-user-static and registers it)", c.Arch)
	}
}

// TestCrossExampleExec builds examples/cross on this host: an arm64 busybox
// root filesystem whose last stage, a strata.run chrooted into the image, runs
// the image's own arm64 shell under qemu-user. Where the host does not emulate
// arm64 the test says why and skips.
func TestCrossExampleExec(t *testing.T) {
	strataBin(t)
	needCrossDeb(t)
	needArm64(t)
	ws, cache := copyWorkspace(t, filepath.Join("..", "..", "examples", "cross")), t.TempDir()
	jb := buildJSON(t, ws, cache)
	if jb.code != 0 {
		t.Fatalf("build: exit %d: %s\n%s", jb.code, jb.errText, jb.stderr)
	}
	a := jb.artifact(t, "rootfs.tar")
	f, err := os.Open(a.Path)
	must(t, err)
	defer f.Close()
	files := map[string][]byte{}
	links := map[string]string{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		must(t, err)
		switch h.Typeflag {
		case tar.TypeSymlink:
			links[strings.TrimPrefix(h.Name, "./")] = h.Linkname
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			must(t, err)
			files[strings.TrimPrefix(h.Name, "./")] = b
		}
	}
	bb, err := elf.NewFile(strings.NewReader(string(files["bin/busybox"])))
	if err != nil || bb.Machine != elf.EM_AARCH64 {
		t.Fatalf("bin/busybox is not an arm64 ELF binary: %v", err)
	}
	if got := string(files["etc/build-machine"]); got != "aarch64\n" {
		t.Errorf("etc/build-machine = %q: the chrooted stage did not run the image's arm64 shell", got)
	}
	if links["bin/sh"] != "/bin/busybox" || links["sbin/init"] != "/bin/busybox" || string(files["etc/hostname"]) != "arm64-rootfs\n" {
		t.Errorf("bin/sh -> %q, sbin/init -> %q, etc/hostname %q", links["bin/sh"], links["sbin/init"], files["etc/hostname"])
	}
	jb.artifact(t, "rootfs.squashfs")
}

// TestCrossExampleWithoutEmulation: on a host that does not run arm64 code,
// building examples/cross fails before any work with one error per stage that
// runs arm64 code, naming the stage, its line, and what the host lacks.
func TestCrossExampleWithoutEmulation(t *testing.T) {
	ctx := context.Background()
	host, err := sandbox.Detect(ctx)
	must(t, err)
	if runtime.GOARCH == "arm64" {
		t.Skip("this host runs arm64 code natively")
	}
	noEmulation := *host
	noEmulation.Binfmt = nil
	// The package is hashed at compile time only: any bytes do.
	ws := copyWorkspace(t, filepath.Join("..", "..", "examples", "cross"))
	must(t, os.MkdirAll(filepath.Join(ws, "deps"), 0o755))
	must(t, os.WriteFile(filepath.Join(ws, crossDeb), []byte("not a package"), 0o644))
	w, err := lang.Load(ctx, ws)
	must(t, err)
	p, err := compiler.Compile(ctx, w, compiler.Options{StrataVersion: "test"})
	must(t, err)
	v, err := plan.Verify(p, plan.VerifyOptions{Host: plan.HostFingerprint("test")})
	must(t, err)
	st, err := store.Open(t.TempDir())
	must(t, err)
	defer st.Close()
	res, err := executor.Build(ctx, v, executor.Options{Store: st, Host: &noEmulation, Workspace: ws, OutDir: t.TempDir()})
	if !errors.Is(err, executor.ErrMissingCapability) || res != nil {
		t.Fatalf("want a capability error before any work, got %v (result %+v)", err, res)
	}
	// strata.busybox runs the build root's (arm64) busybox, strata.run the
	// image's own shell; the other built-ins are Go and need no emulation.
	lacks := "this host lacks what the node requires: arch arm64 (this host is " + runtime.GOARCH +
		", with no qemu-user binfmt entries; a foreign arch runs under qemu-user: Debian's qemu-user-static registers it with binfmt_misc)"
	want := "build failed: 2 nodes failed:\nimages.rootfs.stages[0] (cross.cue:40:3): " + lacks + "\nimages.rootfs.stages[4] (cross.cue:64:3): " + lacks
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
}
