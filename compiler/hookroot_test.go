package compiler_test

import (
	"testing"

	"github.com/strata-build/strata/compiler/plan"
)

// TestHookBuildRootCompiledFirst: a hook whose build root is an image that
// sorts after the image running the hook (a host-tools image) runs in that
// image's tree, not in no build root at all.
func TestHookBuildRootCompiledFirst(t *testing.T) {
	p := compile(t, writeWorkspace(t, t.TempDir(), `package keys

images: app: {version: "1", stages: [{type: "strata.hostname", options: hostname: "a"}], outputs: [{type: "tar"}], hooks: ["lint"]}
images: "zz-tools": {version: "1", stages: [{type: "strata.busybox"}]}
hooks: lint: {on: "post-build", buildroot: "images.zz-tools", command: ["/bin/true"]}
`))
	tools := p.Images["zz-tools"]
	lint, ok := p.Node("hooks.lint")
	if !ok || tools == nil {
		t.Fatalf("no hooks.lint or images.zz-tools")
	}
	if lint.Inputs.BuildRoot != tools.Tree {
		t.Fatalf("hooks.lint build root %q, want images.zz-tools's tree %s", lint.Inputs.BuildRoot, tools.Tree)
	}
	if _, err := plan.Verify(p, plan.VerifyOptions{Host: testHost}); err != nil {
		t.Fatal(err)
	}
}
