package builtin

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHostname(t *testing.T) {
	tests := []struct {
		name, hosts, hostname string
		want                  map[string]string
	}{
		{name: "fresh", hostname: "box", want: map[string]string{
			"etc/hostname": "box\n",
			"etc/hosts":    "127.0.0.1\tlocalhost\n127.0.1.1\tbox\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
		}},
		{name: "replace", hostname: "new.example.org", hosts: "# c\n127.0.0.1 localhost\n127.0.1.1 old\n10.0.0.1 db\n127.0.1.1 older\n", want: map[string]string{
			"etc/hostname": "new.example.org\n",
			"etc/hosts":    "# c\n127.0.0.1 localhost\n127.0.1.1\tnew.example.org new\n10.0.0.1 db\n",
		}},
		{name: "no loopback", hostname: "b-1", hosts: "10.0.0.1 db", want: map[string]string{
			"etc/hostname": "b-1\n",
			"etc/hosts":    "10.0.0.1 db\n127.0.1.1\tb-1\n",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tree := t.TempDir()
			if tc.hosts != "" {
				writeFile(t, filepath.Join(tree, "etc/hosts"), tc.hosts, 0o600)
			}
			if err := runStage(t, "strata.hostname", map[string]string{"hostname": tc.hostname}, Env{Tree: tree}); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, readTree(t, tree, "etc/hostname", "etc/hosts")); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			snap := snapshot(t, tree)
			if got := snap["/etc/hostname"]; !contains(got, "file 0644 0:0") {
				t.Errorf("hostname attrs: %s", got)
			}
			wantHosts := "file 0644 0:0"
			if tc.hosts != "" {
				wantHosts = "file 0600 0:0" // an existing file keeps its mode
			}
			if got := snap["/etc/hosts"]; !contains(got, wantHosts) {
				t.Errorf("hosts attrs: %s", got)
			}
		})
	}
}

func TestHostnameInvalid(t *testing.T) {
	for _, h := range []string{"", "-a", "a-", "a..b", "a_b", "a b", "ä", "x.", string(make([]byte, 65)), "a" + string(make([]byte, 63))} {
		err := runStage(t, "strata.hostname", map[string]string{"hostname": h}, Env{Tree: t.TempDir()})
		wantErr(t, err, "hostname: ")
	}
	wantErr(t, runStage(t, "strata.hostname", `{"name": "x"}`, Env{Tree: t.TempDir()}), `unknown field "name"`)
}

func TestHostnameEscape(t *testing.T) {
	tree, outside, check := sandboxDirs(t)
	symlink(t, "/", filepath.Join(tree, "etc"))
	symlink(t, filepath.Join(outside, "sentinel"), filepath.Join(tree, "hostname"))
	if err := runStage(t, "strata.hostname", map[string]string{"hostname": "box"}, Env{Tree: tree}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"hostname": "box\n"}, readTree(t, tree, "hostname")); diff != "" {
		t.Error(diff)
	}
	check()
}

// TestHostsSymlink reads /etc/hosts through symbolic links inside the tree
// (relative and absolute), replaces the link with a file, and fails on a loop.
func TestHostsSymlink(t *testing.T) {
	for _, target := range []string{"../run/hosts", "/run/hosts", "/../../run/hosts"} {
		tree := t.TempDir()
		writeFile(t, filepath.Join(tree, "run/hosts"), "10.0.0.1 db\n", 0o644)
		symlink(t, target, filepath.Join(tree, "etc/hosts"))
		if err := runStage(t, "strata.hostname", map[string]string{"hostname": "box"}, Env{Tree: tree}); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"etc/hosts": "10.0.0.1 db\n127.0.1.1\tbox\n", "run/hosts": "10.0.0.1 db\n"}
		if diff := cmp.Diff(want, readTree(t, tree, "etc/hosts", "run/hosts")); diff != "" {
			t.Errorf("%s: (-want +got):\n%s", target, diff)
		}
	}
	tree := t.TempDir()
	symlink(t, "hosts2", filepath.Join(tree, "etc/hosts"))
	symlink(t, "hosts", filepath.Join(tree, "etc/hosts2"))
	err := runStage(t, "strata.hostname", map[string]string{"hostname": "box"}, Env{Tree: tree})
	wantErr(t, err, "too many levels of symbolic links")
}
