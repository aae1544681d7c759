package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// rootlessUser is the unprivileged user the rootless tests build as (the one
// test/rootless.sh uses too).
const rootlessUser = "strata-test"

// asUser returns the uid and gid of rootlessUser, creating it when missing.
func asUser(t *testing.T) (int, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to build as another user")
	}
	u, err := user.Lookup(rootlessUser)
	if err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", rootlessUser).CombinedOutput()
		if err != nil {
			t.Skipf("useradd %s: %v %s", rootlessUser, err, out)
		}
		if u, err = user.Lookup(rootlessUser); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// rootlessCLI runs strata as rootlessUser over a copy of ws that the user
// owns, with a cache of its own.
func rootlessCLI(t *testing.T, ws string, args ...string) (cliResult, string) {
	t.Helper()
	u := newRootless(t, ws)
	return u.run(t, args...), u.ws
}

// rootless is a copy of a workspace, a cache and a home that rootlessUser
// owns, for strata to run over as that user, once or more.
type rootless struct {
	ws, cache, home string
	uid, gid        int
}

func newRootless(t *testing.T, ws string) *rootless {
	t.Helper()
	uid, gid := asUser(t)
	top := t.TempDir()
	must(t, os.Chmod(top, 0o755))
	for p := filepath.Dir(top); p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		must(t, os.Chmod(p, 0o755))
	}
	mine := filepath.Join(top, "ws")
	if out, err := exec.Command("cp", "-r", ws, mine).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	cache, home := filepath.Join(top, "cache"), filepath.Join(top, "home")
	must(t, os.Mkdir(cache, 0o700))
	must(t, os.Mkdir(home, 0o700))
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", uid, gid), mine, cache, home).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	return &rootless{ws: mine, cache: cache, home: home, uid: uid, gid: gid}
}

// run runs strata with args as rootlessUser.
func (u *rootless) run(t *testing.T, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(strataBin(t), append([]string{"-C", u.ws, "--cache-dir", u.cache, "--no-progress"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + u.home}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}}
	var out, errb strings.Builder
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

const ownersWS = `package test

images: a: {
	version: "1"
	stages: [
		{type: "strata.files", options: {
			dirs: "/home/u": {uid: 2000, gid: 2000, mode: 0o750}
			files: "/home/u/profile": {content: "x\n", uid: 2000, gid: 2001}
			symlinks: "/home/u/link": "profile"
			devices: "/dev/console": {type: "char", major: 5, minor: 1, mode: 0o620, gid: 5}
		}},
		// Writes into /home/u: the copy-up of a directory owned by 2000.
		{type: "strata.files", options: files: "/home/u/later": content: "y\n"},
		{type: "strata.users", options: users: admin: uid: 1000},
	]
	outputs: [{type: "tar"}, {type: "squashfs"}]
}
// The tree of images.a, copied: owners come from the input's manifest.
images: b: {
	version: "1"
	stages: [
		{type: "strata.copy", options: {input: "a", src: "/home", dst: "/srv"}, inputs: a: "images.a"},
	]
	outputs: [{type: "tar"}]
}
`

// TestSecurityRow30RootAndRootlessExec: one key means one content everywhere.
// The same workspace built as root and as an unprivileged user gives
// byte-identical outputs: owners set by built-in stages, copied from another
// image, kept over a copy-up, device nodes; a command stage that would see or
// set owners a build without root cannot show is refused, naming the stage.
func TestSecurityRow30RootAndRootlessExec(t *testing.T) {
	ws := writeWS(t, ownersWS)
	root := buildJSON(t, ws, t.TempDir())
	if root.code != 0 {
		t.Fatalf("root build: %s\n%s", root.errText, root.stderr)
	}
	r, mine := rootlessCLI(t, ws, "build")
	if r.code != 0 {
		t.Fatalf("rootless build: exit %d\n%s", r.code, r.stderr)
	}
	for _, name := range []string{"a/a.tar", "a/a.squashfs", "b/b.tar"} {
		got := fileSHA(t, filepath.Join(mine, "out", name))
		want := fileSHA(t, filepath.Join(ws, "out", name))
		if got != want {
			list, _ := exec.Command("tar", "-tvf", filepath.Join(mine, "out", name)).CombinedOutput()
			wantList, _ := exec.Command("tar", "-tvf", filepath.Join(ws, "out", name)).CombinedOutput()
			t.Errorf("%s: rootless %s, root %s\nrootless:\n%s\nroot:\n%s", name, got, want, list, wantList)
		}
	}
	list, err := exec.Command("tar", "-tvf", filepath.Join(mine, "out", "b", "b.tar")).Output()
	must(t, err)
	if !strings.Contains(string(list), "2000/2001") {
		t.Errorf("b.tar lost the owners it copied:\n%s", list)
	}

	// A command over a tree with other owners, and a command that changes
	// owners, are refused without root.
	for _, tc := range []struct{ name, spec, want string }{
		{"sees owners", `package test
images: c: {
	version: "1"
	stages: [
		{type: "strata.files", options: files: "/x": {content: "x", uid: 2000, gid: 2000}},
		{type: "strata.run", options: command: ["/bin/sh", "-c", "ls -ln /run/strata/tree > /run/strata/tree/listing"]},
	]
	outputs: [{type: "tar"}]
}
`, "images.c.stages[1] (ws.cue:6:3): a build without root cannot run this command as root would: in its tree, /x belongs to 2000:2000"},
		{"sets owners", `package test
images: c: {
	version: "1"
	stages: [
		{type: "strata.files", options: files: "/x": content: "x"},
		{type: "strata.run", options: command: ["/bin/sh", "-c", "chown 3000:3000 /run/strata/tree/x || true"]},
	]
	outputs: [{type: "tar"}]
}
`, "images.c.stages[1] (ws.cue:6:3): a build without root cannot run this command as root would: it called fchownat with owner 3000:3000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := writeWS(t, tc.spec)
			if jb := buildJSON(t, ws, t.TempDir()); jb.code != 0 {
				t.Fatalf("root build: %s", jb.errText)
			}
			r, _ := rootlessCLI(t, ws, "build")
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("rootless build: exit %d, want %q in:\n%s", r.code, tc.want, r.stderr)
			}
		})
	}
}

// TestSecurityRow43ForgedOwnerRecord: the owners strata records are its own
// bookkeeping: a stage that writes user.strata.* attributes (the records of
// older versions) on its files changes no owner, root or not.
func TestSecurityRow43ForgedOwnerRecord(t *testing.T) {
	ws := writeWS(t, `package test
images: f: {
	version: "1"
	stages: [
		{type: "strata.files", options: files: "/x": content: "x\n"},
		{type: "strata.run", options: command: ["/usr/bin/python3", "-c", "import os; os.setxattr('/run/strata/tree/x', 'user.strata.owner', b'4242:4242')"]},
		{type: "strata.files", options: files: "/y": content: "y\n"},
	]
	outputs: [{type: "tar"}]
}
`)
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no python3 in the host root")
	}
	root := buildJSON(t, ws, t.TempDir())
	if root.code != 0 {
		t.Fatalf("root build: %s\n%s", root.errText, root.stderr)
	}
	r, mine := rootlessCLI(t, ws, "build")
	if r.code != 0 {
		t.Fatalf("rootless build: exit %d\n%s", r.code, r.stderr)
	}
	for _, dir := range []string{ws, mine} {
		list, err := exec.Command("tar", "--numeric-owner", "-tvf", filepath.Join(dir, "out", "f", "f.tar"), "x").Output()
		if err != nil || !strings.Contains(string(list), " 0/0 ") {
			t.Errorf("%s: x is not 0:0 after a stage wrote a forged owner record: %v\n%s", dir, err, list)
		}
	}
}

// TestRootlessDirectoryWithoutSearchExec: a stage that leaves a directory
// without search permission for its owner (strata.copy's mode applies to
// directories too) builds without root as it does as root; the commit failed
// with "lstat ...: permission denied".
func TestRootlessDirectoryWithoutSearchExec(t *testing.T) {
	ws := writeWS(t, `package test
images: a: {
	version: "1"
	stages: [{type: "strata.files", options: files: {
		"/opt/sub/a.txt": content: "a\n"
		"/opt/sub2/b.txt": content: "b\n"
	}}]
}
images: b: {
	version: "1"
	stages: [{type: "strata.copy", options: {input: "a", src: "/opt", dst: "/srv", mode: 0o600}, inputs: a: "images.a"}]
	outputs: [{type: "tar"}]
}
`)
	u := newRootless(t, ws)
	r := u.run(t, "build")
	if r.code != 0 {
		t.Fatalf("rootless build: exit %d\n%s", r.code, r.stderr)
	}
	rootWS := t.TempDir()
	if out, err := exec.Command("cp", "-r", ws+"/.", rootWS).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	if rr := runCLI(t, rootWS, t.TempDir(), "build"); rr.code != 0 {
		t.Fatalf("root build: exit %d\n%s", rr.code, rr.stderr)
	}
	listing := func(tarball string) string {
		out, err := exec.Command("tar", "--numeric-owner", "-tvf", tarball).Output()
		must(t, err)
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			// Mode, owner/group, size and name: everything but the time.
			f := strings.Fields(l)
			lines = append(lines, strings.Join([]string{f[0], f[1], f[2], f[len(f)-1]}, " "))
		}
		return strings.Join(lines, "\n")
	}
	mine, roots := filepath.Join(u.ws, "out", "b", "b.tar"), filepath.Join(rootWS, "out", "b", "b.tar")
	if fileSHA(t, mine) != fileSHA(t, roots) {
		t.Errorf("the rootless tar is not byte for byte the root one")
	}
	got, want := listing(mine), listing(roots)
	if got != want || !strings.Contains(want, "drw------- 0/0 0 srv/sub") {
		t.Errorf("rootless tar:\n%s\nroot tar:\n%s", got, want)
	}
}

// TestRootlessExtractHardLinkExec: an archive's hard link keeps the owner of
// the file it links to in a build without root, as it does as root: the outputs of
// both are the same bytes (the link came out 0:0 without root).
func TestRootlessExtractHardLinkExec(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "x/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "x/f1", Mode: 0o644, Uid: 123, Gid: 456, Size: 1},
		{Typeflag: tar.TypeLink, Name: "x/hard", Linkname: "x/f1", Uid: 123, Gid: 456},
	} {
		must(t, tw.WriteHeader(h))
		if h.Size > 0 {
			_, err := tw.Write([]byte("1"))
			must(t, err)
		}
	}
	must(t, tw.Close())
	ws := writeWS(t, `package test
sources: odd: path: "odd.tar"
images: a: {
	version: "1"
	stages: [{type: "strata.extract", options: {input: "t", dst: "/opt"}, inputs: t: "sources.odd"}]
	outputs: [{type: "tar"}]
}
`)
	must(t, os.WriteFile(filepath.Join(ws, "odd.tar"), buf.Bytes(), 0o644))
	u := newRootless(t, ws)
	if r := u.run(t, "build"); r.code != 0 {
		t.Fatalf("rootless build: exit %d\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, ws, t.TempDir(), "build"); r.code != 0 {
		t.Fatalf("root build: exit %d\n%s", r.code, r.stderr)
	}
	mine, roots := filepath.Join(u.ws, "out", "a", "a.tar"), filepath.Join(ws, "out", "a", "a.tar")
	out, err := exec.Command("tar", "--numeric-owner", "-tvf", mine).Output()
	must(t, err)
	if !strings.Contains(string(out), "123/456") || strings.Count(string(out), "123/456") != 2 {
		t.Errorf("the rootless tar does not give both names 123/456:\n%s", out)
	}
	if fileSHA(t, mine) != fileSHA(t, roots) {
		t.Errorf("the rootless tar is not byte for byte the root one:\n%s", out)
	}
}
