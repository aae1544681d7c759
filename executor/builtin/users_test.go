package builtin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// epoch is 2024-01-01T00:00:00Z, day 19723.
const epoch = 1704067200

func readTree(t *testing.T, tree string, files ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(tree, f))
		if err != nil {
			m[f] = "<" + err.Error() + ">"
			continue
		}
		m[f] = string(b)
	}
	return m
}

const usersOpts = `{
	"groups": {"wheel": {"gid": 10}, "staff": {"gid": 50}},
	"users": {
		"alice": {"uid": 1000, "groups": ["wheel", "staff"], "password": "$6$salt$hash"},
		"bob": {"uid": 1001, "gid": 100, "home": "/srv/bob", "shell": "/bin/bash", "groups": ["wheel"]},
		"svc": {"uid": 999, "gid": 999, "home": "/nonexistent"}
	}
}`

func TestUsersFresh(t *testing.T) {
	tree := t.TempDir()
	if err := runStage(t, "strata.users", usersOpts, Env{Tree: tree, SourceDateEpoch: epoch}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n" +
			"svc:x:999:999::/nonexistent:/bin/sh\n" +
			"alice:x:1000:1000::/home/alice:/bin/sh\n" +
			"bob:x:1001:100::/srv/bob:/bin/bash\n",
		"etc/group": "root:x:0:\n" +
			"wheel:x:10:alice,bob\n" +
			"staff:x:50:alice\n" +
			"bob:x:100:\n" +
			"svc:x:999:\n" +
			"alice:x:1000:\n",
		"etc/shadow": "root:*:19723:0:99999:7:::\n" +
			"svc:!:19723:0:99999:7:::\n" +
			"alice:$6$salt$hash:19723:0:99999:7:::\n" +
			"bob:!:19723:0:99999:7:::\n",
	}
	if diff := cmp.Diff(want, readTree(t, tree, "etc/passwd", "etc/group", "etc/shadow")); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	snap := snapshot(t, tree)
	for p, w := range map[string]string{
		"/etc/shadow":  "0600 0:0",
		"/etc/passwd":  "0644 0:0",
		"/home/alice":  "dir 0700 1000:1000",
		"/srv/bob":     "dir 0700 1001:100",
		"/home":        "dir 0755 0:0",
		"/nonexistent": "",
	} {
		if got := snap[p]; (w == "" && got != "") || (w != "" && !contains(got, w)) {
			t.Errorf("%s: %q, want %q", p, got, w)
		}
	}

	tree2 := t.TempDir()
	if err := runStage(t, "strata.users", usersOpts, Env{Tree: tree2, SourceDateEpoch: epoch}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(snapshot(t, tree), snapshot(t, tree2)); diff != "" {
		t.Errorf("two runs differ:\n%s", diff)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestUsersExisting(t *testing.T) {
	tree := t.TempDir()
	writeFile(t, filepath.Join(tree, "etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n"+
		"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"+
		"alice:x:500:500:Alice A:/home/alice:/bin/zsh\n", 0o644)
	writeFile(t, filepath.Join(tree, "etc/group"), "root:x:0:\nwheel:x:10:root\nusers:x:100:\n", 0o644)
	writeFile(t, filepath.Join(tree, "etc/shadow"), "root:*:19000:0:99999:7:::\nalice:old:19000:0:99999:7:::\n", 0o640)
	if err := os.Chown(filepath.Join(tree, "etc/shadow"), 0, 42); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(tree, "etc/gshadow"), "root:*::\nwheel:*::root\n", 0o640)
	opts := `{"groups": {"staff": {"gid": 50}, "users": {"gid": 100}},
		"users": {"alice": {"uid": 1000, "groups": ["wheel", "staff"]}, "carol": {"uid": 1002, "gid": 100, "groups": ["users"]}}}`
	if err := runStage(t, "strata.users", opts, Env{Tree: tree}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/bash\n" +
			"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" +
			"alice:x:1000:1000:Alice A:/home/alice:/bin/sh\n" +
			"carol:x:1002:100::/home/carol:/bin/sh\n",
		"etc/group": "root:x:0:\n" +
			"wheel:x:10:root,alice\n" +
			"users:x:100:carol\n" +
			"staff:x:50:alice\n" +
			"alice:x:1000:\n",
		"etc/shadow": "root:*:19000:0:99999:7:::\n" +
			"alice:!::0:99999:7:::\n" +
			"carol:!::0:99999:7:::\n",
		"etc/gshadow": "root:*::\n" +
			"wheel:*::root,alice\n" +
			"staff:!::alice\n" +
			"users:!::carol\n" +
			"alice:!::\n",
	}
	if diff := cmp.Diff(want, readTree(t, tree, "etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if got := snapshot(t, tree)["/etc/shadow"]; !contains(got, "file 0640 0:42") {
		t.Errorf("shadow mode/owner not kept: %s", got)
	}
}

func TestUsersBadOptions(t *testing.T) {
	tests := []struct{ name, opts, err string }{
		{"missing uid", `{"users": {"a": {}}}`, `users["a"].uid: required`},
		{"missing gid", `{"groups": {"g": {}}}`, `groups["g"].gid: required`},
		{"bad name", `{"users": {"Bad:Name": {"uid": 1}}}`, `users["Bad:Name"]: "Bad:Name" is not a valid name`},
		{"bad group name", `{"users": {"a": {"uid": 1, "groups": ["x y"]}}}`, `users["a"].groups[0]`},
		{"unknown group", `{"users": {"a": {"uid": 1, "groups": ["wheel"]}}}`, `users["a"].groups: group "wheel" is neither in /etc/group nor in groups`},
		{"colon shell", `{"users": {"a": {"uid": 1, "shell": "/bin/sh:x"}}}`, `users["a"].shell`},
		{"relative shell", `{"users": {"a": {"uid": 1, "shell": "sh"}}}`, `users["a"].shell: "sh" is not an absolute path`},
		{"newline password", `{"users": {"a": {"uid": 1, "password": "a\nb"}}}`, `users["a"].password`},
		{"relative home", `{"users": {"a": {"uid": 1, "home": "home/a"}}}`, `users["a"].home: path "home/a" is not absolute`},
		{"unknown field", `{"users": {"a": {"uid": 1, "gecos": "A"}}}`, `unknown field "gecos"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, runStage(t, "strata.users", tc.opts, Env{Tree: t.TempDir()}), tc.err)
		})
	}
}

func TestUsersEscape(t *testing.T) {
	tree, outside, check := sandboxDirs(t)
	symlink(t, outside, filepath.Join(tree, "etc"))
	symlink(t, filepath.Join(outside, "sentinel"), filepath.Join(tree, "home"))
	if err := runStage(t, "strata.users", `{"users": {"a": {"uid": 1}}}`, Env{Tree: tree}); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, tree)["/"+rel(outside)+"/sentinel/a"]; got != "dir 0700 1:1" {
		t.Errorf("home not confined: %q", got)
	}
	if _, err := os.Stat(filepath.Join(tree, rel(outside), "passwd")); err != nil {
		t.Errorf("passwd not confined: %v", err)
	}
	check()
}

// TestUsersPrimaryGroup: a user whose gid no group has gets a group of its
// own name; an existing group with that gid is used as is; a group of the
// user's name with another gid is an error naming both.
func TestUsersPrimaryGroup(t *testing.T) {
	tree := t.TempDir()
	writeFile(t, filepath.Join(tree, "etc/group"), "root:x:0:\nusers:x:100:\n", 0o644)
	writeFile(t, filepath.Join(tree, "etc/gshadow"), "root:*::\nusers:*::\n", 0o600)
	opts := `{"users": {"alice": {"uid": 1000}, "bob": {"uid": 1001, "gid": 100}}}`
	if err := runStage(t, "strata.users", opts, Env{Tree: tree, SourceDateEpoch: epoch}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"etc/group":   "root:x:0:\nusers:x:100:\nalice:x:1000:\n",
		"etc/gshadow": "root:*::\nusers:*::\nalice:!::\n",
	}
	if diff := cmp.Diff(want, readTree(t, tree, "etc/group", "etc/gshadow")); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	tree = t.TempDir()
	writeFile(t, filepath.Join(tree, "etc/group"), "root:x:0:\ncarol:x:2000:\n", 0o644)
	err := runStage(t, "strata.users", `{"users": {"carol": {"uid": 1002}}}`, Env{Tree: tree})
	wantErr(t, err, `no group has gid 1002, and the group "carol" that would be its primary group has gid 2000`)
}

// TestUsersLastChange: lastchg is the day of SOURCE_DATE_EPOCH, and never 0
// (a forced password change at the first login).
func TestUsersLastChange(t *testing.T) {
	for _, tc := range []struct {
		epoch int64
		want  string
	}{
		{epoch, "alice:!:19723:0:99999:7:::"},
		{86400*3 + 5, "alice:!:3:0:99999:7:::"},
		{1, "alice:!::0:99999:7:::"},
		{0, "alice:!::0:99999:7:::"},
	} {
		tree := t.TempDir()
		if err := runStage(t, "strata.users", `{"users": {"alice": {"uid": 1000}}}`, Env{Tree: tree, SourceDateEpoch: tc.epoch}); err != nil {
			t.Fatal(err)
		}
		shadow := readTree(t, tree, "etc/shadow")["etc/shadow"]
		if !strings.Contains(shadow, "\n"+tc.want+"\n") {
			t.Errorf("epoch %d: shadow\n%s\nwant a line %q", tc.epoch, shadow, tc.want)
		}
	}
}
