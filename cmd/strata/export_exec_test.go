package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/strata-build/strata/executor"
)

const exportWS = `package test

images: img: {
	version: "1"
	stages: [
		{type: "strata.files", options: files: {
			"/etc/motd": content: "hello\n"
			"/bin/tool": {content: "#!/bin/sh\n", mode: 0o4755}
		}},
	]
	outputs: [{type: "tar"}, {type: "ext4"}, {type: "tree"}]
}
`

// nlink returns the link count of p, which must not be a symbolic link.
func nlink(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	must(t, err)
	if fi.Mode()&os.ModeSymlink != 0 {
		t.Fatalf("%s is a symbolic link", p)
	}
	return fi.Sys().(*syscall.Stat_t).Nlink
}

// TestSecurityRow29EditedOutputsExec: exported outputs are files the user owns
// and may change, never links into the store. Appending to one, changing an
// ext4 image's label with tune2fs, editing and deleting files of a tree output
// and a rebuild leave the store clean, and the rebuild exports them again with
// the digests it reports.
func TestSecurityRow29EditedOutputsExec(t *testing.T) {
	ws := writeWS(t, exportWS)
	cache := t.TempDir()
	jb := buildJSON(t, ws, cache)
	if jb.code != 0 {
		t.Fatalf("build: exit %d: %s\n%s", jb.code, jb.errText, jb.stderr)
	}
	tar, ext4, tree := jb.artifact(t, "img.tar"), jb.artifact(t, "img.ext4"), jb.artifact(t, "img.tree")
	for _, a := range []executor.Artifact{tar, ext4} {
		if want := filepath.Join(ws, "out", "img", a.Name); a.Path != want {
			t.Errorf("%s exported to %s, want %s", a.Name, a.Path, want)
		}
		if n := nlink(t, a.Path); n != 1 {
			t.Errorf("%s has %d links: it shares its inode with the store", a.Path, n)
		}
		if a.State != executor.ArtifactExported {
			t.Errorf("%s: state %q", a.Name, a.State)
		}
	}
	motd := filepath.Join(tree.Path, "etc", "motd")
	if n := nlink(t, motd); n != 1 {
		t.Errorf("%s has %d links: it shares its inode with the store", motd, n)
	}
	// The tree holds a setuid file: its export is private to its owner.
	if fi, err := os.Stat(tree.Path); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("tree output with a setuid file: %v, mode %v, want 0700", err, fi.Mode())
	}
	if fi, err := os.Stat(filepath.Join(tree.Path, "bin", "tool")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("bin/tool lost its setuid bit in the tree export: %v %v", err, fi.Mode())
	}

	// A second build changes nothing and says the outputs are current.
	jb2 := buildJSON(t, ws, cache)
	for _, a := range jb2.result.Artifacts {
		if a.State != executor.ArtifactCurrent {
			t.Errorf("unchanged rebuild: %s is %q, want current", a.Name, a.State)
		}
	}

	// Edit everything, as a user or a CI signing step would.
	f, err := os.OpenFile(tar.Path, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteString("appended")
	must(t, err)
	must(t, f.Close())
	if out, err := exec.Command("tune2fs", "-L", "edited", ext4.Path).CombinedOutput(); err != nil {
		t.Fatalf("tune2fs: %v\n%s", err, out)
	}
	must(t, os.WriteFile(motd, []byte("changed\n"), 0o644))
	must(t, os.Remove(filepath.Join(tree.Path, "bin", "tool")))
	if r := runCLI(t, ws, cache, "cache", "verify"); r.code != 0 || !strings.Contains(r.stdout, "clean") {
		t.Fatalf("the store changed when outputs were edited: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	jb3 := buildJSON(t, ws, cache)
	if jb3.code != 0 || len(jb3.started()) != 0 {
		t.Fatalf("rebuild: exit %d, started %v: %s", jb3.code, jb3.started(), jb3.errText)
	}
	for _, a := range []executor.Artifact{jb3.artifact(t, "img.tar"), jb3.artifact(t, "img.ext4")} {
		if a.State != executor.ArtifactExported {
			t.Errorf("%s after an edit: state %q, want exported", a.Name, a.State)
		}
		if got := fileSHA(t, a.Path); got != string(a.Digest) {
			t.Errorf("%s: the file hashes to %s, the build reports %s", a.Name, got, a.Digest)
		}
	}
	if b, err := os.ReadFile(motd); err != nil || string(b) != "hello\n" {
		t.Errorf("tree output etc/motd after rebuild: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(tree.Path, "bin", "tool")); err != nil {
		t.Errorf("deleted bin/tool not exported again: %v", err)
	}
	if r := runCLI(t, ws, cache, "cache", "verify"); r.code != 0 {
		t.Errorf("cache verify after rebuild: exit %d\n%s", r.code, r.stdout)
	}
}

// TestOutDirPerWorkspaceExec: outputs go to the workspace's own out/<image>/, so
// two workspaces with an image of the same name do not overwrite each other on
// one store; an output the spec no longer has is removed; a failed build
// leaves the earlier outputs in place and says they are stale.
func TestOutDirPerWorkspaceExec(t *testing.T) {
	cache := t.TempDir()
	spec := func(motd, outputs string) string {
		return `package test
images: img: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/etc/motd": content: "` + motd + `"}]
	outputs: ` + outputs + `
}
`
	}
	one, two := writeWS(t, spec("one", `[{type: "tar"}, {type: "tar.zst"}]`)), writeWS(t, spec("two", `[{type: "tar"}]`))
	for _, ws := range []string{one, two} {
		if jb := buildJSON(t, ws, cache); jb.code != 0 {
			t.Fatalf("build %s: %s", ws, jb.errText)
		}
	}
	for ws, want := range map[string]string{one: "one", two: "two"} {
		got, err := exec.Command("tar", "-xOf", filepath.Join(ws, "out", "img", "img.tar"), "etc/motd").Output()
		if err != nil || string(got) != want {
			t.Errorf("%s/out/img/img.tar holds motd %q (%v), want %q", ws, got, err, want)
		}
	}

	// Drop tar.zst from the spec: the next build removes it from out/img/.
	must(t, os.WriteFile(filepath.Join(one, "ws.cue"), []byte(spec("one", `[{type: "tar"}]`)), 0o644))
	if jb := buildJSON(t, one, cache); jb.code != 0 {
		t.Fatalf("build: %s", jb.errText)
	}
	if _, err := os.Stat(filepath.Join(one, "out", "img", "img.tar.zst")); !os.IsNotExist(err) {
		t.Errorf("img.tar.zst is still exported after it left the spec: %v", err)
	}

	// A failing build keeps the earlier outputs and calls them stale.
	must(t, os.WriteFile(filepath.Join(one, "ws.cue"), []byte(strings.Replace(spec("one", `[{type: "tar"}]`),
		`stages: [`, `stages: [{type: "strata.run", options: command: ["/bin/sh", "-c", "exit 3"]}, `, 1)), 0o644))
	r := runCLI(t, one, cache, "build")
	if r.code != 1 || !strings.Contains(r.stderr, "img: not exported, this build of it failed; "+filepath.Join(one, "out", "img")+" holds an earlier build's outputs") {
		t.Errorf("failed build: exit %d\n%s", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("a failed build reported outputs as results:\n%s", r.stdout)
	}
	if _, err := os.Stat(filepath.Join(one, "out", "img", "img.tar")); err != nil {
		t.Errorf("the earlier output is gone: %v", err)
	}
}

// TestSecurityRow42OutDirSymlinkExec: a symbolic link planted in a workspace cannot
// make a build write outside it: out/ pointing out of the workspace is refused,
// and out/<image> pointing elsewhere is replaced, not followed.
func TestSecurityRow42OutDirSymlinkExec(t *testing.T) {
	cache := t.TempDir()
	victim := t.TempDir()
	sentinel := filepath.Join(victim, "keep")
	must(t, os.WriteFile(sentinel, []byte("keep"), 0o644))

	ws := writeWS(t, strings.Replace(exportWS, `{type: "ext4"}, `, "", 1))
	must(t, os.Symlink(victim, filepath.Join(ws, "out")))
	r := runCLI(t, ws, cache, "build")
	if r.code == 0 || !strings.Contains(r.stderr, "out dir") {
		t.Errorf("build with out -> %s: exit %d\n%s", victim, r.code, r.stderr)
	}
	must(t, os.Remove(filepath.Join(ws, "out")))

	must(t, os.Mkdir(filepath.Join(ws, "out"), 0o755))
	must(t, os.Symlink(victim, filepath.Join(ws, "out", "img")))
	if r := runCLI(t, ws, cache, "build"); r.code != 0 {
		t.Fatalf("build with out/img -> %s: exit %d\n%s", victim, r.code, r.stderr)
	}
	if fi, err := os.Lstat(filepath.Join(ws, "out", "img")); err != nil || !fi.IsDir() {
		t.Errorf("out/img is not a directory after the build: %v", err)
	}
	ents, _ := os.ReadDir(victim)
	if b, _ := os.ReadFile(sentinel); len(ents) != 1 || !bytes.Equal(b, []byte("keep")) {
		t.Errorf("the build wrote through the planted link: %v", ents)
	}
}

// TestSecurityExportKeepsUserDirectoryExec: out/<image> that strata has no
// record of exporting, holding a file strata would not have written, is a
// directory of the user's: the build refuses to replace it (it was deleted
// whole) and says what to do. Once strata has exported an image, a file
// added to its directory goes at the next build, as before.
func TestSecurityExportKeepsUserDirectoryExec(t *testing.T) {
	cache := t.TempDir()
	ws := writeWS(t, strings.Replace(exportWS, `{type: "ext4"}, `, "", 1))
	precious := filepath.Join(ws, "out", "img", "precious.txt")
	must(t, os.MkdirAll(filepath.Dir(precious), 0o755))
	must(t, os.WriteFile(precious, []byte("precious\n"), 0o644))
	r := runCLI(t, ws, cache, "build")
	if r.code == 0 || !strings.Contains(r.stderr, "holds precious.txt, which strata did not export") {
		t.Errorf("build over a directory of the user's: exit %d\n%s", r.code, r.stderr)
	}
	if b, err := os.ReadFile(precious); err != nil || string(b) != "precious\n" {
		t.Fatalf("the user's file is gone: %v", err)
	}
	must(t, os.Remove(precious))
	if r := runCLI(t, ws, cache, "build"); r.code != 0 {
		t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
	}
	stray := filepath.Join(ws, "out", "img", "stray")
	must(t, os.WriteFile(stray, nil, 0o644))
	if r := runCLI(t, ws, cache, "build"); r.code != 0 {
		t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Lstat(stray); !os.IsNotExist(err) {
		t.Errorf("a file added to an exported image's directory survived the build: %v", err)
	}
}

// TestSecurityRow3CorruptObjectNotAssembledExec: a flipped byte in a stored file
// object never reaches an output. An assembler that reads the checkout
// (squashfs, ext4, erofs) refuses it; cache verify drops not only the stage
// whose tree holds the object but every result made from that tree, so the
// rebuild makes the outputs again instead of serving them as cached.
func TestSecurityRow3CorruptObjectNotAssembledExec(t *testing.T) {
	spec := func(outputs string) string {
		return `package test
images: img: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/etc/motd": content: "hello\n"}]
	outputs: ` + outputs + `
}
`
	}
	ws := writeWS(t, spec(`[{type: "tar"}, {type: "squashfs"}]`))
	cache := t.TempDir()
	if jb := buildJSON(t, ws, cache); jb.code != 0 {
		t.Fatalf("build: %s", jb.errText)
	}
	// Flip a byte of /etc/motd's file object in place (the blob of the same
	// content is a hard link to it).
	flipObjects(t, cache, "hello\n")

	must(t, os.WriteFile(filepath.Join(ws, "ws.cue"), []byte(spec(`[{type: "tar"}, {type: "squashfs"}, {type: "ext4"}, {type: "erofs"}]`)), 0o644))
	jb := buildJSON(t, ws, cache)
	if jb.code != 1 || !strings.Contains(jb.errText, "corrupt object in store") || !strings.Contains(jb.errText, "etc/motd") {
		t.Fatalf("build over a corrupt object: exit %d: %s", jb.code, jb.errText)
	}
	for _, a := range jb.result.Artifacts {
		t.Errorf("exported %s from a corrupt tree", a.Name)
	}

	r := runCLI(t, ws, cache, "--output", "json", "cache", "verify")
	var rep struct {
		Report struct {
			Corrupt        []string `json:"corrupt"`
			DroppedActions []string `json:"dropped_actions"`
		} `json:"report"`
	}
	must(t, json.Unmarshal([]byte(r.stdout), &rep))
	plan := compileJSON(t, ws, cache)
	for _, name := range []string{"images.img.stages[0]", "images.img.outputs[0]", "images.img.outputs[1]"} {
		if !slices.Contains(rep.Report.DroppedActions, plan[name]) {
			t.Errorf("verify kept %s, made from the corrupt object: %+v", name, rep.Report)
		}
	}

	jb = buildJSON(t, ws, cache)
	if jb.code != 0 {
		t.Fatalf("rebuild: %s", jb.errText)
	}
	for _, name := range []string{"images.img.stages[0]", "images.img.outputs[1]", "images.img.outputs[2]", "images.img.outputs[3]"} {
		if !slices.Contains(jb.started(), name) {
			t.Errorf("%s was not rebuilt: started %v", name, jb.started())
		}
	}
	read := map[string][]string{
		"img.tar":      {"tar", "-xOf", "", "etc/motd"},
		"img.squashfs": {"unsquashfs", "-cat", "", "etc/motd"},
		"img.ext4":     {"debugfs", "-R", "cat /etc/motd", ""},
	}
	for name, argv := range read {
		argv = slices.Clone(argv)
		argv[slices.Index(argv, "")] = jb.artifact(t, name).Path
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		if err != nil || string(out) != "hello\n" {
			t.Errorf("%s: /etc/motd is %q (%v)", name, out, err)
		}
	}
}

// compileJSON maps node names to IDs.
func compileJSON(t *testing.T, ws, cache string) map[string]string {
	t.Helper()
	r := runCLI(t, ws, cache, "compile")
	var p struct {
		Nodes []struct{ ID, Name string }
	}
	must(t, json.Unmarshal([]byte(r.stdout), &p))
	out := map[string]string{}
	for _, n := range p.Nodes {
		out[n.Name] = n.ID
	}
	return out
}

// TestReadOnlyStoreExec: a store on a read-only filesystem still serves what it
// holds: cache ls and a fully cached build work; a build that must run
// something says the store is read-only.
func TestReadOnlyStoreExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount the store read-only in a mount namespace")
	}
	ws := copyMinimal(t)
	cache := t.TempDir()
	if jb := buildJSON(t, ws, cache); jb.code != 0 {
		t.Fatalf("build: %s", jb.errText)
	}
	bin := strataBin(t)
	run := func(args string) (string, error) {
		script := fmt.Sprintf(`mount --bind %[1]s %[1]s && mount -o remount,ro,bind %[1]s && %[2]s -C %[3]s --cache-dir %[1]s --no-progress %[4]s`, cache, bin, ws, args)
		out, err := exec.Command("unshare", "-m", "sh", "-c", script).CombinedOutput()
		return string(out), err
	}
	if out, err := run("cache ls"); err != nil || !strings.Contains(out, "images.minimal.stages[3]") {
		t.Errorf("cache ls on a read-only store: %v\n%s", err, out)
	}
	if out, err := run("build"); err != nil || !strings.Contains(out, "0 built, 6 cached") {
		t.Errorf("cached build on a read-only store: %v\n%s", err, out)
	}
	src, err := os.ReadFile(filepath.Join(ws, "minimal.cue"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(ws, "minimal.cue"), bytes.Replace(src, []byte(`hostname: "minimal"`), []byte(`hostname: "ro"`), 1), 0o644))
	if out, err := run("build"); err == nil || !strings.Contains(out, "store is read-only") {
		t.Errorf("build that must run a stage on a read-only store: %v\n%s", err, out)
	}
}

// TestTreeReexportLinksUntouchedFilesExec: when a tree output changes, the
// files an untouched earlier export already holds with the same content are
// taken from it (the same inode), the changed ones come from the store, and an
// export the user edited is not taken from at all: the edit is undone.
func TestTreeReexportLinksUntouchedFilesExec(t *testing.T) {
	cache := t.TempDir()
	spec := func(b string) string {
		return `package test
images: img: {
	version: "1"
	stages: [{type: "strata.files", options: files: {
		"/a": content: "a\n"
		"/d/b": content: "` + b + `\n"
		"/d/c": {content: "c\n", mode: 0o600}
	}}]
	outputs: [{type: "tree"}]
}
`
	}
	ws := writeWS(t, spec("one"))
	if jb := buildJSON(t, ws, cache); jb.code != 0 {
		t.Fatalf("build: %s", jb.errText)
	}
	out := filepath.Join(ws, "out", "img", "img.tree")
	ino := func(p string) uint64 {
		t.Helper()
		var st syscall.Stat_t
		must(t, syscall.Lstat(filepath.Join(out, p), &st))
		return st.Ino
	}
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, p))
		must(t, err)
		return string(b)
	}
	a, c := ino("a"), ino("d/c")

	// Only /d/b changes: /a and /d/c are the earlier export's files.
	must(t, os.WriteFile(filepath.Join(ws, "ws.cue"), []byte(spec("two")), 0o644))
	if jb := buildJSON(t, ws, cache); jb.code != 0 {
		t.Fatalf("build: %s", jb.errText)
	}
	if read("d/b") != "two\n" || read("a") != "a\n" || read("d/c") != "c\n" {
		t.Fatalf("re-export holds a=%q d/b=%q d/c=%q", read("a"), read("d/b"), read("d/c"))
	}
	if ino("a") != a || ino("d/c") != c {
		t.Errorf("unchanged files were copied again, not taken from the untouched export")
	}
	if fi, err := os.Stat(filepath.Join(out, "d", "c")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("d/c: %v, %v; want mode 0600", fi.Mode(), err)
	}

	// The user edits /a in place; then /d/b changes again. The edited export
	// is not reused: /a is the store's again, in a new file.
	must(t, os.WriteFile(filepath.Join(out, "a"), []byte("edited\n"), 0o644))
	a = ino("a")
	must(t, os.WriteFile(filepath.Join(ws, "ws.cue"), []byte(spec("three")), 0o644))
	if jb := buildJSON(t, ws, cache); jb.code != 0 {
		t.Fatalf("build: %s", jb.errText)
	}
	if read("a") != "a\n" || read("d/b") != "three\n" {
		t.Errorf("after an edit, the re-export holds a=%q d/b=%q", read("a"), read("d/b"))
	}
	if ino("a") == a {
		t.Errorf("the edited file was kept")
	}
	if r := runCLI(t, ws, cache, "cache", "verify"); r.code != 0 {
		t.Errorf("cache verify: exit %d\n%s", r.code, r.stderr)
	}
}

// TestExportDeviceModesExec: device nodes and fifos in a tree output have
// their own modes, not the ones the umask left them (mknod applies it): a
// 0666 /dev/null came out 0644 in the tree while the tar said 0666.
func TestExportDeviceModesExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a tree output holds device nodes only as root")
	}
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	ws := writeWS(t, `package test
images: img: {
	version: "1"
	stages: [{type: "strata.files", options: devices: {
		"/dev/null": {type: "char", major: 1, minor: 3, mode: 0o666}
		"/dev/p": {type: "fifo", mode: 0o666}
	}}]
	outputs: [{type: "tree"}]
}
`)
	if r := runCLI(t, ws, t.TempDir(), "build"); r.code != 0 {
		t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
	}
	for _, name := range []string{"null", "p"} {
		fi, err := os.Lstat(filepath.Join(ws, "out", "img", "img.tree", "dev", name))
		must(t, err)
		if fi.Mode().Perm() != 0o666 {
			t.Errorf("/dev/%s: mode %v, want 0666", name, fi.Mode().Perm())
		}
	}
}

// TestExportErrorNamesItsOutputExec: an export that fails on one artifact
// is reported at that artifact's output (it was the image's first), and a
// corrupt object says how to recover.
func TestExportErrorNamesItsOutputExec(t *testing.T) {
	ws := writeWS(t, `package test
images: img: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/etc/motd": content: "hello\n"}]
	outputs: [{type: "tar"}, {type: "tree"}]
}
`)
	cache := t.TempDir()
	if r := runCLI(t, ws, cache, "build"); r.code != 0 {
		t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
	}
	flipObjects(t, cache, "hello\n")
	must(t, os.RemoveAll(filepath.Join(ws, "out")))
	r := runCLI(t, ws, cache, "build")
	_, failed, _ := strings.Cut(r.stderr, "build failed: ")
	if r.code == 0 || !strings.HasPrefix(failed, "images.img.outputs[1] ") || !strings.Contains(failed, "strata cache verify") ||
		!strings.Contains(r.stderr, "0 failed, 0 skipped, 1 export failed") {
		t.Errorf("export of a corrupt tree: exit %d\n%s", r.code, r.stderr)
	}
}

// TestSecurityCachedResultMustFitExec: a cached result is checked against its
// node before it is used, whoever wrote it (a shared remote cache's entries
// land in the local store as they are): a single-file source whose file is
// "../.." bound a host file into the stage, and a source entry holding other
// content than its key's was used as is. Both are now refused and rebuilt.
func TestSecurityCachedResultMustFitExec(t *testing.T) {
	ws := writeWS(t, `package test
sources: data: path: "data.txt"
sources: other: path: "other.txt"
images: img: {
	version: "1"
	stages: [{type: "strata.run", inputs: {d: "sources.data", o: "sources.other"}, options: command: ["/bin/sh", "-c", "cat /run/strata/inputs/d > /run/strata/tree/copied"]}]
	outputs: [{type: "tree"}]
}
`)
	must(t, os.WriteFile(filepath.Join(ws, "data.txt"), []byte("hello\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(ws, "other.txt"), []byte("EVIL\n"), 0o644))
	secret := filepath.Join(t.TempDir(), "secret")
	must(t, os.WriteFile(secret, []byte("HOST SECRET\n"), 0o644))
	cache := t.TempDir()
	if r := runCLI(t, ws, cache, "build"); r.code != 0 {
		t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
	}
	ids := compileJSON(t, ws, cache)
	record := func(name string) (string, map[string]any) {
		p := filepath.Join(cache, "actions", ids[name]+".json")
		b, err := os.ReadFile(p)
		must(t, err)
		var a map[string]any
		must(t, json.Unmarshal(b, &a))
		return p, a
	}
	_, other := record("sources.other")
	for name, edit := range map[string]func(a map[string]any){
		"file out of the tree": func(a map[string]any) {
			a["meta"].(map[string]any)["file"] = "../../../../../../../../../.." + secret
		},
		"other content": func(a map[string]any) {
			a["tree"] = other["tree"]
			a["meta"] = other["meta"]
		},
		"output size": func(a map[string]any) {
			// The output's record; the source's has no outputs.
			outs, _ := a["meta"].(map[string]any)["outputs"].(map[string]any)
			for _, o := range outs {
				o.(map[string]any)["size"] = 5
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			p, a := record("sources.data")
			edit(a)
			b, err := json.Marshal(a)
			must(t, err)
			must(t, os.WriteFile(p, b, 0o644))
			stage, _ := record("images.img.stages[0]")
			must(t, os.Remove(stage))
			if name == "output size" {
				p, a = record("images.img.outputs[0]")
				edit(a)
				b, err := json.Marshal(a)
				must(t, err)
				must(t, os.WriteFile(p, b, 0o644))
			}
			r := runCLI(t, ws, cache, "build")
			if r.code != 0 || !strings.Contains(r.stderr, "cached result refused") {
				t.Fatalf("build over a bad entry: exit %d\n%s", r.code, r.stderr)
			}
			if b, _ := os.ReadFile(filepath.Join(ws, "out", "img", "img.tree", "copied")); string(b) != "hello\n" {
				t.Errorf("the stage read %q", b)
			}
		})
	}
}

// TestOutputTargetRunsGatesExec: building one output of an image runs the
// image's post-build hooks, which decide whether its outputs are exported:
// images.a.outputs[0] alone exported content the gate rejected.
func TestOutputTargetRunsGatesExec(t *testing.T) {
	ws := writeWS(t, `package test
images: a: {
	version: "1"
	stages: [{type: "strata.files", options: files: "/etc/motd": content: "bad\n"}]
	outputs: [{type: "tar"}, {type: "tree"}]
	hooks: ["check"]
}
hooks: check: {on: "post-build", command: ["/bin/sh", "-c", "! grep -rq bad /run/strata/outputs/a.tree"]}
`)
	cache := t.TempDir()
	r := runCLI(t, ws, cache, "build", "images.a.outputs[0]")
	if r.code == 0 || !strings.Contains(r.stderr, "hooks.check") {
		t.Errorf("build of one output past a failing gate: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(ws, "out", "a", "a.tar")); err == nil {
		t.Errorf("the output the gate rejected was exported")
	}
}

// TestPruneImagesGoneExec: a build of the whole workspace removes the exports
// of images it no longer has (a template instance whose record went), and
// says so; another workspace's exports in a shared out directory stay.
func TestPruneImagesGoneExec(t *testing.T) {
	spec := func(images ...string) string {
		s := "package test\n"
		for _, name := range images {
			s += `images: ` + name + `: {version: "1", stages: [{type: "strata.files", options: files: "/etc/motd": content: "` + name + `\n"}], outputs: [{type: "tar"}]}` + "\n"
		}
		return s
	}
	ws := writeWS(t, spec("a", "b"))
	other := writeWS(t, spec("c"))
	out := filepath.Join(t.TempDir(), "shared-out")
	cache := t.TempDir()
	for _, w := range []string{ws, other} {
		if r := runCLI(t, w, cache, "build", "--out-dir", out); r.code != 0 {
			t.Fatalf("build: exit %d\n%s", r.code, r.stderr)
		}
	}
	must(t, os.WriteFile(filepath.Join(ws, "ws.cue"), []byte(spec("a")), 0o644))
	r := runCLI(t, ws, cache, "build", "--out-dir", out)
	if r.code != 0 || !strings.Contains(r.stderr, "images.b is no longer in the workspace") {
		t.Fatalf("build without b: exit %d\n%s", r.code, r.stderr)
	}
	for name, want := range map[string]bool{"a": true, "b": false, "c": true, ".strata/b.json": false} {
		if _, err := os.Lstat(filepath.Join(out, name)); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", name, err == nil, want)
		}
	}
}

// flipObjects flips the first byte of every file object of content in the
// store at cache, in place (the blob of the same content is a hard link to
// each): content corrupted on disk under a valid name.
func flipObjects(t *testing.T, cache, content string) {
	t.Helper()
	sum := sha256.Sum256([]byte(content))
	hexd := hex.EncodeToString(sum[:])
	objs, _ := filepath.Glob(filepath.Join(cache, "files", hexd[:2], hexd+".*"))
	if len(objs) == 0 {
		t.Fatalf("no file object of %q", content)
	}
	for _, o := range objs {
		f, err := os.OpenFile(o, os.O_WRONLY, 0)
		must(t, err)
		_, err = f.WriteAt([]byte{content[0] ^ 0x20}, 0)
		must(t, err)
		must(t, f.Close())
	}
}
