package builtin

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func makeInput(t *testing.T) string {
	t.Helper()
	in := t.TempDir()
	writeFile(t, filepath.Join(in, "app/bin/tool"), "tool", 0o4755)
	writeFile(t, filepath.Join(in, "app/etc/conf"), "conf", 0o640)
	writeFile(t, filepath.Join(in, "app/bin/ro"), "ro", 0o444)
	symlink(t, "/etc/passwd", filepath.Join(in, "app/passwd"))
	symlink(t, "../etc/conf", filepath.Join(in, "app/bin/conf"))
	if err := os.Mkdir(filepath.Join(in, "app/empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(in, "app/etc/conf"), 5, 6); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(in, "app"), 0o750); err != nil {
		t.Fatal(err)
	}
	return in
}

func TestCopyDir(t *testing.T) {
	in := makeInput(t)
	tree := t.TempDir()
	env := Env{Tree: tree, Inputs: map[string]string{"src": in}}
	if err := runStage(t, "strata.copy", map[string]string{"input": "src", "src": "/app", "dst": "/opt/app"}, env); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/opt":              "dir 0755 0:0",
		"/opt/app":          "dir 0750 0:0",
		"/opt/app/bin":      "dir 0755 0:0",
		"/opt/app/bin/conf": "link ../etc/conf",
		"/opt/app/bin/ro":   `file 0444 0:0 "ro"`,
		"/opt/app/bin/tool": `file 4755 0:0 "tool"`,
		"/opt/app/empty":    "dir 0700 0:0",
		"/opt/app/etc":      "dir 0755 0:0",
		"/opt/app/etc/conf": `file 0640 5:6 "conf"`,
		"/opt/app/passwd":   "link /etc/passwd",
	}
	if diff := cmp.Diff(want, snapshot(t, tree)); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}

	// Determinism: a fresh tree gets the same result.
	tree2 := t.TempDir()
	env.Tree = tree2
	if err := runStage(t, "strata.copy", map[string]string{"input": "src", "src": "/app", "dst": "/opt/app"}, env); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(snapshot(t, tree), snapshot(t, tree2)); diff != "" {
		t.Errorf("two runs differ:\n%s", diff)
	}
}

func TestCopyMergesThroughDirSymlink(t *testing.T) {
	in := makeInput(t)
	tree := t.TempDir()
	symlink(t, "usr/bin", filepath.Join(tree, "bin"))
	if err := os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := Env{Tree: tree, Inputs: map[string]string{"src": in}}
	if err := runStage(t, "strata.copy", map[string]string{"input": "src", "src": "/app"}, env); err != nil {
		t.Fatal(err)
	}
	got := snapshot(t, tree)
	if got["/bin"] != "link usr/bin" || got["/usr/bin/tool"] != `file 4755 0:0 "tool"` {
		t.Errorf("merge through /bin -> usr/bin: %v", got)
	}
}

func TestCopyFileInput(t *testing.T) {
	in := filepath.Join(t.TempDir(), "blob")
	writeFile(t, in, "#!/bin/sh\n", 0o755)
	tree := t.TempDir()
	env := Env{Tree: tree, Inputs: map[string]string{"f": in}}
	if err := runStage(t, "strata.copy", map[string]string{"input": "f", "dst": "/usr/local/bin/x"}, env); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, tree)["/usr/local/bin/x"]; got != `file 0755 0:0 "#!/bin/sh\n"` {
		t.Errorf("got %s", got)
	}
	wantErr(t, runStage(t, "strata.copy", map[string]string{"input": "f"}, env), `dst must name the destination file`)
	wantErr(t, runStage(t, "strata.copy", map[string]string{"input": "f", "src": "/a", "dst": "/x"}, env), `src must be "/"`)
}

func TestCopyErrors(t *testing.T) {
	in := makeInput(t)
	symlink(t, "/", filepath.Join(in, "abs"))
	symlink(t, "../../..", filepath.Join(in, "up"))
	tree, outside, check := sandboxDirs(t)
	symlink(t, outside, filepath.Join(tree, "out"))
	env := Env{Tree: tree, Inputs: map[string]string{"src": in}}
	tests := []struct {
		name string
		opts any
		err  string
	}{
		{"missing input", map[string]string{"input": "nope"}, `input: input "nope" is not bound to this stage (inputs: [src])`},
		{"no input", map[string]string{}, `input: missing input name`},
		{"dotdot src", map[string]string{"input": "src", "src": "/../x"}, `src: path "/../x" contains ".."`},
		{"src through abs link", map[string]string{"input": "src", "src": "/abs/etc/passwd", "dst": "/x"}, `src: /abs/etc/passwd is not in input "src" (a link on its way is followed only within the input)`},
		{"src through up link", map[string]string{"input": "src", "src": "/up/etc/passwd", "dst": "/x"}, `src: /up/etc/passwd is not in input "src"`},
		{"relative dst", map[string]string{"input": "src", "dst": "opt"}, `dst: path "opt" is not absolute`},
		{"unknown field", `{"input": "src", "from": "/"}`, `unknown field "from"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, runStage(t, "strata.copy", tc.opts, env), tc.err)
		})
	}
	// Copy into a tree whose /out leads outside: confined.
	if err := runStage(t, "strata.copy", map[string]string{"input": "src", "src": "/app/etc", "dst": "/out"}, env); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(tree, rel(outside), "conf")); err != nil {
		t.Errorf("confined copy: %v", err)
	}
	check()
}

// TestCopyOwnerMode: owner and mode replace those of every copied entry,
// directories and files alike; links take the owner; the tree root keeps its
// own; bad values are errors naming the option.
func TestCopyOwnerMode(t *testing.T) {
	in := makeInput(t)
	tree := t.TempDir()
	env := Env{Tree: tree, Inputs: map[string]string{"src": in}}
	opts := map[string]any{"input": "src", "src": "/app", "dst": "/opt/app", "owner": "123:456", "mode": 0o750}
	if err := runStage(t, "strata.copy", opts, env); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/opt":              "dir 0755 0:0",
		"/opt/app":          "dir 0750 123:456",
		"/opt/app/bin":      "dir 0750 123:456",
		"/opt/app/bin/conf": "link ../etc/conf",
		"/opt/app/bin/ro":   `file 0750 123:456 "ro"`,
		"/opt/app/bin/tool": `file 0750 123:456 "tool"`,
		"/opt/app/empty":    "dir 0750 123:456",
		"/opt/app/etc":      "dir 0750 123:456",
		"/opt/app/etc/conf": `file 0750 123:456 "conf"`,
		"/opt/app/passwd":   "link /etc/passwd",
	}
	if diff := cmp.Diff(want, snapshot(t, tree)); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
	if os.Geteuid() == 0 {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(tree, "opt/app/passwd"), &st); err != nil || st.Uid != 123 || st.Gid != 456 {
			t.Errorf("link owner %d:%d (%v), want 123:456", st.Uid, st.Gid, err)
		}
	}

	// A single file, and only the mode.
	tree = t.TempDir()
	env.Tree = tree
	if err := runStage(t, "strata.copy", map[string]any{"input": "src", "src": "/app/etc/conf", "dst": "/etc/conf", "mode": 0o600}, env); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, tree)["/etc/conf"]; got != `file 0600 5:6 "conf"` {
		t.Errorf("/etc/conf: %s", got)
	}

	// The root keeps its mode and owner when dst is "/".
	tree = t.TempDir()
	env.Tree = tree
	if err := runStage(t, "strata.copy", map[string]any{"input": "src", "src": "/app/etc", "owner": "7:7", "mode": 0o700}, env); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(tree); err != nil || fi.Mode().Perm() == 0o700 {
		t.Errorf("tree root took the copy's mode: %v %v", fi.Mode(), err)
	}

	for _, tc := range []struct {
		opts map[string]any
		err  string
	}{
		{map[string]any{"input": "src", "owner": "root"}, `owner: "root" is not "uid:gid"`},
		{map[string]any{"input": "src", "owner": "1:-2"}, `owner: "1:-2" is not "uid:gid"`},
		{map[string]any{"input": "src", "mode": 0o10000}, "mode: 010000 is not a permission mode"},
	} {
		env.Tree = t.TempDir()
		wantErr(t, runStage(t, "strata.copy", tc.opts, env), tc.err)
	}
}
