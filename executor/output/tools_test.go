package output

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const toolChildEnv = "STRATA_OUTPUT_TEST_CHILD"

// toolRunning reports whether a process runs `sleep <marker>`.
func toolRunning(marker string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Equal(b, []byte("sleep\x00"+marker+"\x00")) {
			return true
		}
	}
	return false
}

// waitTool waits until toolRunning(marker) is want. The bound is for
// liveness, not speed.
func waitTool(t *testing.T, marker string, want bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); toolRunning(marker) != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sleep %s running = %v, want %v", marker, !want, want)
		}
	}
}

// TestToolDiesWithStrata (RELIABILITY row 18): an assembler does not outlive
// strata killed with SIGKILL, nor a cancelled context.
func TestToolDiesWithStrata(t *testing.T) {
	if m, ok := strings.CutPrefix(os.Getenv(toolChildEnv), "tool:"); ok {
		runTool(context.Background(), nil, "sleep", m)
		return
	}
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep")
	}
	// Markers unique to this test process: another test run may be going on.
	marker, marker2 := fmt.Sprintf("86421%d", os.Getpid()), fmt.Sprintf("86422%d", os.Getpid())
	cmd := exec.Command(os.Args[0], "-test.run=^TestToolDiesWithStrata$")
	cmd.Env = append(os.Environ(), toolChildEnv+"=tool:"+marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitTool(t, marker, true)
	cmd.Process.Kill()
	cmd.Wait()
	waitTool(t, marker, false)

	// Cancelled: the tool's process group is killed, not only the tool.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := runTool(ctx, nil, "sh", "-c", "sleep "+marker2+"; true")
		done <- err
	}()
	waitTool(t, marker2, true)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled tool: %v, want context.Canceled", err)
	}
	waitTool(t, marker2, false)
}
