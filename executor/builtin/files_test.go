package builtin

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

const filesHappy = `{
	"dirs": {"/a/b": {"mode": 448, "uid": 1, "gid": 2}, "/srv": {}},
	"files": {
		"/etc/hostname": {"content": "box\n", "mode": 384, "uid": 3, "gid": 4},
		"/usr/bin/su": {"content": "#!", "mode": 2541},
		"/a/b/c": {"content": ""}
	},
	"symlinks": {"/bin": "usr/bin", "/etc/localtime": "/usr/share/zoneinfo/UTC"}
}`

func TestFilesHappy(t *testing.T) {
	tree := t.TempDir()
	if err := runStage(t, "strata.files", filesHappy, Env{Tree: tree}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/a":             "dir 0755 0:0",
		"/a/b":           "dir 0700 1:2",
		"/a/b/c":         `file 0644 0:0 ""`,
		"/bin":           "link usr/bin",
		"/etc":           "dir 0755 0:0",
		"/etc/hostname":  `file 0600 3:4 "box\n"`,
		"/etc/localtime": "link /usr/share/zoneinfo/UTC",
		"/srv":           "dir 0755 0:0",
		"/usr":           "dir 0755 0:0",
		"/usr/bin":       "dir 0755 0:0",
		"/usr/bin/su":    `file 4755 0:0 "#!"`,
	}
	if diff := cmp.Diff(want, snapshot(t, tree)); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
}

func TestFilesDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, tree := range []string{a, b} {
		if err := runStage(t, "strata.files", filesHappy, Env{Tree: tree}); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(snapshot(t, a), snapshot(t, b)); diff != "" {
		t.Errorf("two runs differ:\n%s", diff)
	}
}

func TestFilesReplaces(t *testing.T) {
	tree := t.TempDir()
	writeFile(t, filepath.Join(tree, "f"), "old", 0o600)
	symlink(t, "f", filepath.Join(tree, "l"))
	symlink(t, "elsewhere", filepath.Join(tree, "s"))
	opts := `{"files": {"/l": {"content": "new"}, "/s": {"content": "s"}}, "symlinks": {"/f": "target"}}`
	if err := runStage(t, "strata.files", opts, Env{Tree: tree}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/f": "link target",
		"/l": `file 0644 0:0 "new"`,
		"/s": `file 0644 0:0 "s"`,
	}
	if diff := cmp.Diff(want, snapshot(t, tree)); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
	err := runStage(t, "strata.files", `{"dirs": {"/l/x": {}}}`, Env{Tree: tree})
	wantErr(t, err, `dirs["/l/x"]: resolve /l: not a directory`)
	err = runStage(t, "strata.files", `{"dirs": {"/s": {}}}`, Env{Tree: tree})
	wantErr(t, err, `dirs["/s"]: /s exists and is not a directory`)
}

func TestFilesBadOptions(t *testing.T) {
	tests := []struct{ name, opts, err string }{
		{"unknown field", `{"file": {}}`, `unknown field "file"`},
		{"unknown nested field", `{"files": {"/x": {"contents": "a"}}}`, `unknown field "contents"`},
		{"wrong type", `{"files": {"/x": {"mode": "0644"}}}`, `files.mode`},
		{"negative uid", `{"dirs": {"/x": {"uid": -1}}}`, `dirs.uid`},
		{"invalid id", `{"dirs": {"/x": {"uid": 4294967295}}}`, `dirs["/x"].uid: 4294967295 is not a valid id`},
		{"trailing data", `{} {}`, `trailing data`},
		{"relative", `{"files": {"etc/x": {}}}`, `files["etc/x"]: path "etc/x" is not absolute`},
		{"dotdot", `{"files": {"/etc/../../x": {}}}`, `contains ".."`},
		{"mode", `{"dirs": {"/x": {"mode": 4096}}}`, `dirs["/x"].mode: 010000 is not a permission mode`},
		{"root file", `{"files": {"/": {}}}`, `the tree root cannot be a file`},
		{"empty target", `{"symlinks": {"/x": ""}}`, `symlinks["/x"]: invalid symbolic link target`},
		{"file over dir", `{"dirs": {"/d": {}}, "files": {"/d": {}}}`, `files["/d"]: /d is a directory`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := runStage(t, "strata.files", tc.opts, Env{Tree: t.TempDir()})
			wantErr(t, err, tc.err)
		})
	}
}

// TestFilesEscape plants symbolic links leading out of the tree and writes
// through them: every write must land inside the tree.
func TestFilesEscape(t *testing.T) {
	tree, outside, check := sandboxDirs(t)
	symlink(t, outside, filepath.Join(tree, "etc"))                              // absolute, to the host path
	symlink(t, "../../../../../..", filepath.Join(tree, "up"))                   // relative, far above
	symlink(t, "/", filepath.Join(tree, "root"))                                 // the "/etc -> /" case
	symlink(t, filepath.Join(outside, "sentinel"), filepath.Join(tree, "final")) // final component
	if err := os.Link(filepath.Join(outside, "sentinel"), filepath.Join(tree, "hard")); err != nil {
		t.Fatal(err)
	}
	opts := map[string]any{
		"files": map[string]any{
			"/etc/sentinel":                       map[string]any{"content": "pwned"},
			"/up/" + rel(outside) + "/sentinel":   map[string]any{"content": "pwned"},
			"/root/" + rel(outside) + "/sentinel": map[string]any{"content": "pwned"},
			"/final":                              map[string]any{"content": "pwned"},
			"/hard":                               map[string]any{"content": "pwned"},
		},
		"dirs": map[string]any{"/etc/d": map[string]any{"mode": 0o700}},
	}
	if err := runStage(t, "strata.files", opts, Env{Tree: tree}); err != nil {
		t.Fatal(err)
	}
	check()
	inside := filepath.Join(tree, rel(outside), "sentinel")
	if b, err := os.ReadFile(inside); err != nil || string(b) != "pwned" {
		t.Errorf("confined write: %q, %v", b, err)
	}
	for _, p := range []string{"final", "hard"} {
		if b, err := os.ReadFile(filepath.Join(tree, p)); err != nil || string(b) != "pwned" {
			t.Errorf("%s: %q, %v", p, b, err)
		}
	}
	if fi, err := os.Lstat(filepath.Join(tree, rel(outside), "d")); err != nil || !fi.IsDir() {
		t.Errorf("confined dir: %v", err)
	}
}

// TestFilesDevices: with a journal (as the executor runs built-ins, root or
// not) devices are empty files and records that become device entries, with
// their modes and owners; without one, as root, they are made with mknod.
func TestFilesDevices(t *testing.T) {
	const opts = `{"devices": {
		"/dev/null": {"type": "char", "major": 1, "minor": 3, "mode": 438},
		"/dev/sda1": {"type": "block", "major": 8, "minor": 1, "mode": 432, "gid": 6},
		"/run/initctl": {"type": "fifo"}}}`
	dir := t.TempDir()
	var journal bytes.Buffer
	if err := runStage(t, "strata.files", opts, Env{Tree: dir, Records: &journal}); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadRecords(&journal)
	if err != nil {
		t.Fatal(err)
	}
	tr := &tree.Tree{Entries: []tree.Entry{
		{Path: "dev", Type: tree.Dir, Mode: 0o755},
		{Path: "dev/null", Type: tree.File, Mode: 0o666, Digest: digest.FromString("")},
		{Path: "dev/sda1", Type: tree.File, Mode: 0o660, Digest: digest.FromString("")},
	}}
	if !recs.Apply(tr) {
		t.Fatal("no records applied")
	}
	want := []tree.Entry{
		{Path: "dev", Type: tree.Dir, Mode: 0o755},
		{Path: "dev/null", Type: tree.CharDev, Mode: 0o666, Major: 1, Minor: 3},
		{Path: "dev/sda1", Type: tree.BlockDev, Mode: 0o660, GID: 6, Major: 8, Minor: 1},
	}
	if diff := cmp.Diff(want, tr.Entries); diff != "" {
		t.Errorf("entries with records (-want +got):\n%s", diff)
	}
	if err := tr.Validate(); err != nil {
		t.Error(err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "run/initctl")); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v %v", fi, err)
	}

	for _, tc := range []struct{ opts, err string }{
		{`{"devices": {"/dev/x": {"type": "char"}}}`, "a char device 0:0 is overlayfs's mark"},
		{`{"devices": {"/dev/x": {"type": "fifo", "major": 1}}}`, "a fifo has no major or minor number"},
		{`{"devices": {"/dev/x": {"type": "socket"}}}`, `devices["/dev/x"].type: "socket" is not char, block or fifo`},
		{`{"devices": {"/dev/x": {"type": "block", "major": 4096}}}`, "beyond Linux's 12-bit major"},
		{`{"devices": {"/": {"type": "fifo"}}}`, "the tree root cannot be a device"},
	} {
		wantErr(t, runStage(t, "strata.files", tc.opts, Env{Tree: t.TempDir()}), tc.err)
	}

	if os.Geteuid() != 0 {
		t.Skip("not root: mknod")
	}
	dir = t.TempDir()
	if err := runStage(t, "strata.files", opts, Env{Tree: dir}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"dev/null": "c 1:3 0666 0:0", "dev/sda1": "b 8:1 0660 0:6", "run/initctl": "p 0:0 0600 0:0"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, p), &st); err != nil {
			t.Fatal(err)
		}
		kind := map[uint32]string{unix.S_IFCHR: "c", unix.S_IFBLK: "b", unix.S_IFIFO: "p"}[st.Mode&unix.S_IFMT]
		got := fmt.Sprintf("%s %d:%d %04o %d:%d", kind, unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Mode&0o7777, st.Uid, st.Gid)
		if got != want {
			t.Errorf("%s: %s, want %s", p, got, want)
		}
	}
}
