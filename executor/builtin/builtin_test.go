package builtin

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTypesAndInfo(t *testing.T) {
	want := []string{"strata.busybox", "strata.copy", "strata.debootstrap", "strata.extract", "strata.files", "strata.hostname", "strata.run", "strata.users"}
	if diff := cmp.Diff(want, Types()); diff != "" {
		t.Errorf("Types (-want +got):\n%s", diff)
	}
	for _, typ := range Types() {
		info, ok := Info(typ)
		if !ok || info.Name != typ || info.Doc == "" {
			t.Errorf("Info(%q) = %+v, %v", typ, info, ok)
		}
	}
	if _, ok := Info("strata.nope"); ok {
		t.Errorf("Info of an unknown type succeeded")
	}
	err := Run(context.Background(), "strata.nope", nil, Env{Tree: t.TempDir()})
	if !errors.Is(err, ErrUnknownType) {
		t.Errorf("Run of an unknown type: %v", err)
	}
	wantErr(t, Run(context.Background(), "strata.files", nil, Env{}), "no target tree")
}

func TestRunCommand(t *testing.T) {
	argv, env, chroot, err := RunCommand([]byte(`{"command": ["/bin/sh", "-c", "true"], "chroot": true, "env": {"A": "1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/bin/sh", "-c", "true"}, argv); diff != "" {
		t.Error(diff)
	}
	if diff := cmp.Diff(map[string]string{"A": "1"}, env); diff != "" {
		t.Error(diff)
	}
	if !chroot {
		t.Error("chroot not set")
	}
	_, env, chroot, err = RunCommand([]byte(`{"command": ["true"]}`))
	if err != nil || env == nil || chroot {
		t.Errorf("defaults: %v %v %v", env, chroot, err)
	}
	for opts, msg := range map[string]string{
		`{}`:                "command: must not be empty",
		`{"command": [""]}`: "command[0]: must name a program",
		`{"command": ["x"], "env": {"A=B": "1"}}`: `env: invalid variable name "A=B"`,
		`{"command": ["x"], "cwd": "/"}`:          `unknown field "cwd"`,
		`{"command": "x"}`:                        "command",
	} {
		_, _, _, err := RunCommand([]byte(opts))
		wantErr(t, err, msg)
	}
	err = Run(context.Background(), "strata.run", []byte(`{"command": ["x"]}`), Env{Tree: t.TempDir()})
	if !errors.Is(err, ErrExecutorStage) {
		t.Errorf("Run(strata.run): %v", err)
	}
	err = Run(context.Background(), "strata.run", []byte(`{}`), Env{Tree: t.TempDir()})
	wantErr(t, err, "strata.run: command: must not be empty")
}

func TestRunFromDirs(t *testing.T) {
	base := t.TempDir()
	tree := filepath.Join(base, "tree")
	inputs := filepath.Join(base, "inputs")
	opts := filepath.Join(base, "options.json")
	writeFile(t, filepath.Join(inputs, "src/hello"), "hi", 0o644)
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, opts, `{"input": "src", "src": "/hello", "dst": "/hello"}`, 0o644)
	var stdout, stderr bytes.Buffer
	if err := runFromDirs(context.Background(), "strata.copy", opts, tree, inputs, "1704067200", &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"/hello": `file 0644 0:0 "hi"`}, snapshot(t, tree)); diff != "" {
		t.Error(diff)
	}
	err := runFromDirs(context.Background(), "strata.copy", opts, tree, inputs, "yesterday", &stdout, &stderr)
	wantErr(t, err, `SOURCE_DATE_EPOCH="yesterday"`)
	err = runFromDirs(context.Background(), "strata.copy", filepath.Join(base, "none.json"), tree, inputs, "", &stdout, &stderr)
	wantErr(t, err, "read options")
	// No inputs directory at all is fine for stages without inputs.
	writeFile(t, opts, `{"hostname": "box"}`, 0o644)
	if err := runFromDirs(context.Background(), "strata.hostname", opts, tree, filepath.Join(base, "none"), "", &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
}
