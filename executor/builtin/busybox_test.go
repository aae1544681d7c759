package builtin

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const hostBusybox = "/bin/busybox"

func needBusybox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(hostBusybox); err != nil {
		t.Skipf("no %s: %v", hostBusybox, err)
	}
}

func TestBusyboxAll(t *testing.T) {
	needBusybox(t)
	out, err := exec.Command(hostBusybox, "--list-full").Output()
	if err != nil {
		t.Fatal(err)
	}
	applets := strings.Fields(string(out))
	tree := t.TempDir()
	if err := runStage(t, "strata.busybox", `{}`, Env{Tree: tree}); err != nil {
		t.Fatal(err)
	}
	snap := snapshot(t, tree)
	if got := snap["/bin/busybox"]; !strings.HasPrefix(got, "file 0755 0:0") {
		t.Errorf("/bin/busybox: %s", got)
	}
	want, _ := os.ReadFile(hostBusybox)
	got, _ := os.ReadFile(filepath.Join(tree, "bin/busybox"))
	if !bytes.Equal(want, got) {
		t.Errorf("binary differs")
	}
	for _, a := range applets {
		if a == "bin/busybox" {
			continue // the installed binary itself
		}
		if snap["/"+a] != "link /bin/busybox" {
			t.Errorf("/%s: %q", a, snap["/"+a])
		}
	}
	if snap["/bin/sh"] != "link /bin/busybox" {
		t.Errorf("/bin/sh: %q", snap["/bin/sh"])
	}
	// The installed shell works when run from the tree.
	out, err = exec.Command(filepath.Join(tree, "bin/busybox"), "sh", "-c", "echo ok").Output()
	if err != nil || string(out) != "ok\n" {
		t.Errorf("sh: %q, %v", out, err)
	}

	tree2 := t.TempDir()
	if err := runStage(t, "strata.busybox", `{}`, Env{Tree: tree2}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(snap, snapshot(t, tree2)); diff != "" {
		t.Errorf("two runs differ:\n%s", diff)
	}
}

func TestBusyboxSome(t *testing.T) {
	needBusybox(t)
	tree := t.TempDir()
	writeFile(t, filepath.Join(tree, "bin/ls"), "real ls", 0o755)
	symlink(t, "/old/target", filepath.Join(tree, "usr/bin/env"))
	opts := map[string]any{"install": "/usr/lib/bb", "applets": []string{"sh", "ls", "env", "sh"}}
	if err := runStage(t, "strata.busybox", opts, Env{Tree: tree}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/bin":         "dir 0755 0:0",
		"/bin/ls":      `file 0755 0:0 "real ls"`,
		"/bin/sh":      "link /usr/lib/bb",
		"/usr":         "dir 0755 0:0",
		"/usr/bin":     "dir 0755 0:0",
		"/usr/bin/env": "link /usr/lib/bb",
		"/usr/lib":     "dir 0755 0:0",
	}
	got := snapshot(t, tree)
	delete(got, "/usr/lib/bb")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tree (-want +got):\n%s", diff)
	}
}

func TestBusyboxErrors(t *testing.T) {
	needBusybox(t)
	tests := []struct {
		name string
		opts any
		err  string
	}{
		{"unknown applet", map[string]any{"applets": []string{"sh", "no-such-applet"}}, `applets[1]: "no-such-applet" is not an applet of /bin/busybox`},
		{"missing binary", map[string]any{"binary": "/no/busybox"}, `binary: open /no/busybox`},
		{"relative binary", map[string]any{"binary": "busybox"}, `binary: "busybox" is not an absolute path`},
		{"root install", map[string]any{"install": "/"}, `install: must name a file`},
		{"not busybox", map[string]any{"binary": "/bin/false"}, `--list-full`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, runStage(t, "strata.busybox", tc.opts, Env{Tree: t.TempDir()}), tc.err)
		})
	}
}
