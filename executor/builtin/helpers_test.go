package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// snapshot describes every entry under dir except dir itself: type, mode,
// owner, and content or link target.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		attrs := fmt.Sprintf("%04o %d:%d", unixMode(fi.Mode()), st.Uid, st.Gid)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m["/"+rel] = "link " + target
		case fi.IsDir():
			m["/"+rel] = "dir " + attrs
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if len(b) > 100 {
				m["/"+rel] = fmt.Sprintf("file %s (%d bytes)", attrs, len(b))
			} else {
				m["/"+rel] = fmt.Sprintf("file %s %q", attrs, b)
			}
		default:
			m["/"+rel] = "other " + fi.Mode().Type().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// runStage marshals opts (a string is used verbatim) and runs typ.
func runStage(t *testing.T, typ string, opts any, env Env) error {
	t.Helper()
	var b []byte
	if s, ok := opts.(string); ok {
		b = []byte(s)
	} else {
		var err error
		if b, err = json.Marshal(opts); err != nil {
			t.Fatal(err)
		}
	}
	return Run(context.Background(), typ, b, env)
}

// sandboxDirs makes base/tree and base/outside/sentinel; it returns the tree,
// the outside directory and a check that the outside is unchanged.
func sandboxDirs(t *testing.T) (tree, outside string, check func()) {
	t.Helper()
	base := t.TempDir()
	tree = filepath.Join(base, "tree")
	outside = filepath.Join(base, "outside")
	for _, d := range []string{tree, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "sentinel"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := snapshot(t, outside)
	wantBase := listDir(t, base)
	return tree, outside, func() {
		t.Helper()
		if diff := cmp.Diff(want, snapshot(t, outside)); diff != "" {
			t.Errorf("outside of the tree changed (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantBase, listDir(t, base)); diff != "" {
			t.Errorf("the tree's parent changed (-want +got):\n%s", diff)
		}
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// writeFile writes a file with the Unix mode bits mode (07777).
func writeFile(t *testing.T, p, content string, mode uint32) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, fileMode(mode)); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err error, substr string) {
	t.Helper()
	switch {
	case substr == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case substr != "" && err == nil:
		t.Fatalf("no error, want one containing %q", substr)
	case substr != "" && !strings.Contains(err.Error(), substr):
		t.Fatalf("error %q does not contain %q", err, substr)
	}
}

// rel strips the leading slash of an absolute host path, for the place a
// confined absolute path lands inside a tree.
func rel(p string) string { return strings.TrimPrefix(p, "/") }
