package sandbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProcessLimit (RELIABILITY row 20): a stage that forks far past its limit
// fails with ErrProcessLimit, leaves no process behind, and its cgroup is gone.
func TestProcessLimit(t *testing.T) {
	h := host(t)
	if h.ProcessLimit == "" {
		if os.Getenv("CI") != "" && os.Geteuid() == 0 {
			t.Fatal("no writable pids cgroup on a root CI machine")
		}
		t.Skip("no writable pids cgroup here (doctor reports it)")
	}
	parent, _ := pidsHierarchy()
	before := strataCgroups(t, parent)
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"plain tree", Spec{Root: busyboxRoot(t), Tree: t.TempDir()}},
		{"overlay staging", Spec{Root: busyboxRoot(t), Lower: []string{t.TempDir()}, Upper: t.TempDir()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			spec.MaxProcs = 32
			var out bytes.Buffer
			spec.Stdout, spec.Stderr = &out, &out
			// A bounded fork storm: 300 sleepers against a limit of 32.
			spec.Command = []string{"/bin/sh", "-c", `i=0; while [ $i -lt 300 ]; do sleep 30 & i=$((i+1)); done; kill $(jobs -p) 2>/dev/null; exit 0`}
			code, err := Run(context.Background(), h, spec)
			if !errors.Is(err, ErrProcessLimit) {
				t.Fatalf("Run = %d, %v; want ErrProcessLimit\n%s", code, err, out.String())
			}
			if !strings.Contains(err.Error(), "more than 32 processes") {
				t.Errorf("error does not say the limit: %v", err)
			}
		})
	}
	if after := strataCgroups(t, parent); len(after) != len(before) {
		t.Errorf("sandbox cgroups left behind: %v (before: %v)", after, before)
	}
	waitGone(t, "sleep\x0030\x00")
}

func strataCgroups(t *testing.T, parent string) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(parent, "strata-*"))
	return m
}
