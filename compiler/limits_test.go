package compiler_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/compiler/plan"
)

// TestLimitsAreNotKeyed: timeout, memory and tmp_size reach the plan but no key:
// raising a timeout rebuilds nothing. The same work written twice with
// different limits is one node with the larger of each.
func TestLimitsAreNotKeyed(t *testing.T) {
	limited := strings.Replace(baseSpec, `{type: "strata.hostname", options: hostname: "a"},`,
		`{type: "strata.hostname", options: hostname: "a", timeout: "30m", memory: "1GiB", tmp_size: "64MiB"},`, 1)
	limited = strings.Replace(limited, `hooks: check: {on: "post-build", command: ["/bin/true"]}`,
		`hooks: check: {on: "post-build", command: ["/bin/true"], timeout: "10s"}`, 1)
	if limited == baseSpec {
		t.Fatal("the test no longer edits baseSpec")
	}
	base := compile(t, writeWorkspace(t, t.TempDir(), baseSpec))
	p := compile(t, writeWorkspace(t, t.TempDir(), limited))
	s1, w1 := keys(base)
	s2, w2 := keys(p)
	if d := cmp.Diff(s1, s2); d != "" {
		t.Errorf("limits changed strong keys:\n%s", d)
	}
	if d := cmp.Diff(w1, w2); d != "" {
		t.Errorf("limits changed weak keys:\n%s", d)
	}
	st, _ := p.Node("images.a.stages[0]")
	if d := cmp.Diff(&plan.Limits{TimeoutSeconds: 1800, Memory: 1 << 30, TmpSize: 64 << 20}, st.Limits); d != "" {
		t.Errorf("stage limits (-want +got):\n%s", d)
	}
	hook, _ := p.Node("images.a.hooks.check")
	if hook == nil || hook.Limits == nil || hook.Limits.TimeoutSeconds != 10 {
		t.Errorf("hook limits: %+v", hook)
	}
	if other, _ := base.Node("images.a.stages[0]"); other.Limits != nil {
		t.Errorf("unset limits must stay out of the plan: %+v", other.Limits)
	}

	shared := compile(t, writeWorkspace(t, t.TempDir(), `package keys

images: one: {version: "1", stages: [{type: "strata.hostname", options: hostname: "same", timeout: "2h", memory: "1GiB"}]}
images: two: {version: "1", stages: [{type: "strata.hostname", options: hostname: "same", timeout: "1h", memory: "2GiB", tmp_size: "1GiB"}]}
`))
	n, _ := shared.Node("images.two.stages[0]")
	// tmp_size is set in one place only: the other keeps the default, so
	// 1 GiB is a floor under it, not a cap.
	if d := cmp.Diff(&plan.Limits{TimeoutSeconds: 7200, Memory: 2 << 30, TmpSize: 1 << 30, AtLeastDefault: []string{"tmp_size"}}, n.Limits); d != "" {
		t.Errorf("shared node limits (-want +got):\n%s", d)
	}
	// A stage with a short timeout shared with the same stage without one:
	// the other image's one-hour default must still hold.
	unset := compile(t, writeWorkspace(t, t.TempDir(), `package keys

images: one: {version: "1", stages: [{type: "strata.hostname", options: hostname: "same", timeout: "5m"}]}
images: two: {version: "1", stages: [{type: "strata.hostname", options: hostname: "same"}]}
`))
	n, _ = unset.Node("images.one.stages[0]")
	if d := cmp.Diff(&plan.Limits{TimeoutSeconds: 300, AtLeastDefault: []string{"timeout"}}, n.Limits); d != "" {
		t.Errorf("limits shared with a default (-want +got):\n%s", d)
	}
}
