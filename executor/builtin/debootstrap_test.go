package builtin

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDebootstrapArgv(t *testing.T) {
	tests := []struct {
		name, opts string
		want       []string
	}{
		{"defaults", `{}`, []string{"mmdebstrap", "--mode=root", "--format=directory", "--variant=minbase",
			"--components=main", "bookworm", TreeDir, "http://deb.debian.org/debian"}},
		{"all", `{"suite": "trixie", "mirror": "https://m.example/debian", "variant": "apt", "include": ["busybox", "ca-certificates", "libc6:arm64"],
			"components": ["main", "contrib"], "arch": "arm64"}`,
			[]string{"mmdebstrap", "--mode=root", "--format=directory", "--variant=apt", "--include=busybox,ca-certificates,libc6:arm64",
				"--components=main,contrib", "--architectures=arm64", "trixie", TreeDir, "https://m.example/debian"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var o debootstrapOptions
			if err := decode([]byte(tc.opts), &o); err != nil {
				t.Fatal(err)
			}
			o.defaults()
			if err := o.validate(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, debootstrapArgv(o, TreeDir)); diff != "" {
				t.Errorf("argv (-want +got):\n%s", diff)
			}
		})
	}
	if diff := cmp.Diff([]string{"PATH=" + buildRootPath, "LC_ALL=C.UTF-8", "SOURCE_DATE_EPOCH=1704067200"}, debootstrapEnv(epoch)); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}

func TestDebootstrapErrors(t *testing.T) {
	tests := []struct {
		name string
		opts any
		err  string
	}{
		{"suite", map[string]any{"suite": "Book worm"}, `suite: "Book worm" is not a suite name`},
		{"mirror", map[string]any{"mirror": "ftp://x"}, `mirror: "ftp://x" is not an http, https or file URL`},
		{"variant", map[string]any{"variant": "tiny"}, `variant: "tiny" is not one of`},
		{"include", map[string]any{"include": []string{"ok", "--evil"}}, `include[1]: "--evil" is not a package name`},
		{"components", map[string]any{"components": []string{"main", "a b"}}, `components[1]`},
		{"arch", map[string]any{"arch": "x86 64"}, `arch: "x86 64"`},
		{"unknown", map[string]any{"keyring": "x"}, `unknown field "keyring"`},
		{"include type", `{"include": "busybox"}`, `include`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, runStage(t, "strata.debootstrap", tc.opts, Env{Tree: t.TempDir()}), tc.err)
		})
	}
	if _, err := lookBuildRoot("mmdebstrap"); err == nil {
		t.Skip("mmdebstrap is installed here; not checking the missing-tool error")
	}
	err := runStage(t, "strata.debootstrap", `{}`, Env{Tree: t.TempDir()})
	wantErr(t, err, "strata.debootstrap: mmdebstrap is not installed in the build root")

}
