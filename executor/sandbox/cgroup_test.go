package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestProcessLimit (RELIABILITY row 20): a stage that forks far past its limit
// fails with ErrProcessLimit, leaves no process behind, and its cgroup is gone.
func TestProcessLimit(t *testing.T) {
	h := host(t)
	if h.ProcessLimit != limitCgroupV2 && h.ProcessLimit != limitCgroupV1 {
		if os.Getenv("CI") != "" && os.Geteuid() == 0 {
			t.Fatal("no writable pids cgroup on a root CI machine")
		}
		t.Skip("no writable pids cgroup here (doctor reports it)")
	}
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
			spec.Command = []string{"/bin/sh", "-c", `i=0; while [ $i -lt 300 ]; do sleep ` + sleepMarker + ` & i=$((i+1)); done; kill $(jobs -p) 2>/dev/null; exit 0`}
			code, err := Run(context.Background(), h, spec)
			if !errors.Is(err, ErrProcessLimit) {
				t.Fatalf("Run = %d, %v; want ErrProcessLimit\n%s", code, err, out.String())
			}
			if !strings.Contains(err.Error(), "more than 32 processes") {
				t.Errorf("error does not say the limit: %v", err)
			}
		})
	}
	if left := ownCgroups(t); len(left) > 0 {
		t.Errorf("sandbox cgroups left behind: %v", left)
	}
	waitGone(t, "sleep\x00"+sleepMarker+"\x00")
}

// ownCgroups lists the sandbox cgroups this test process still has: only its
// own, so that another test run on the machine does not disturb the check.
func ownCgroups(t *testing.T) []string {
	t.Helper()
	p := findCgroupParents()
	var out []string
	for _, parent := range []string{p.v2, p.v1Pids, p.v1Memory} {
		if parent == "" {
			continue
		}
		m, _ := filepath.Glob(filepath.Join(parent, fmt.Sprintf("strata-%d-*", os.Getpid())))
		out = append(out, m...)
	}
	return out
}

// forkStorm starts up to 300 sleepers from a subshell (a shell exits when it
// cannot fork) and prints how many processes its pid namespace then holds,
// counted by the shell's own glob, which needs no fork at the limit.
var forkStorm = `(i=0; while [ $i -lt 300 ]; do sleep ` + sleepMarker + ` & i=$((i+1)); done) 2>/dev/null
set -- /proc/[0-9]*; echo "processes $#"; kill -9 -1; exit 0`

// countedProcesses runs forkStorm and returns the count it printed.
func countedProcesses(t *testing.T, h *Host, spec Spec) (int, error) {
	t.Helper()
	var out bytes.Buffer
	spec.Command = []string{"/bin/sh", "-c", forkStorm}
	spec.Stdout, spec.Stderr = &out, &out
	_, err := Run(context.Background(), h, spec)
	var n int
	if i := strings.LastIndex(out.String(), "processes "); i >= 0 {
		fmt.Sscanf(out.String()[i:], "processes %d", &n)
	} else {
		t.Logf("fork storm output:\n%s", out.String())
	}
	return n, err
}

// TestSecurityRow20RootlessProcessLimit: RELIABILITY row 20 for an
// unprivileged user. Without a delegated cgroup the sandbox gets RLIMIT_NPROC
// in its own user namespace: a fork storm stays under the limit, while the
// user's other processes on the host neither count nor are limited. With a
// delegated cgroup (a v1 subtree owned by the user) the stage fails with
// ErrProcessLimit as it does as root.
func TestSecurityRow20RootlessProcessLimit(t *testing.T) {
	switch os.Getenv(childEnv) {
	case "nproc":
		nprocChild(t)
		return
	case "delegated":
		delegatedChild(t)
		return
	}
	h := host(t)
	t.Run("rlimit", func(t *testing.T) {
		runAsNobody(t, "TestSecurityRow20RootlessProcessLimit", "nproc", nil)
	})
	t.Run("delegated cgroup", func(t *testing.T) {
		join := delegateCgroups(t, h)
		runAsNobodyIn(t, join, "TestSecurityRow20RootlessProcessLimit", "delegated", nil)
	})
}

func childHost(t *testing.T) *Host {
	t.Helper()
	hostOnce.Do(func() { testHost, hostErr = Detect(context.Background()) })
	if hostErr != nil || testHost.Root {
		t.Fatalf("unprivileged detect: %v %+v", hostErr, testHost)
	}
	return testHost
}

func nprocChild(t *testing.T) {
	h := childHost(t)
	if h.ProcessLimit != limitRlimit {
		t.Fatalf("ProcessLimit = %q, want %q", h.ProcessLimit, limitRlimit)
	}
	// 40 processes of this user outside the sandbox, more than its limit.
	var others []*exec.Cmd
	defer func() {
		for _, c := range others {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for i := 0; i < 40; i++ {
		c := exec.Command("sleep", "3600")
		must(t, c.Start())
		others = append(others, c)
	}
	root := busyboxRoot(t)
	for _, staged := range []bool{false, true} {
		spec := Spec{Root: root, MaxProcs: 32}
		if staged {
			spec.Lower, spec.Upper = []string{t.TempDir()}, t.TempDir()
		} else {
			spec.Tree = t.TempDir()
		}
		n, err := countedProcesses(t, h, spec)
		if err != nil {
			t.Fatalf("staged=%v: %v", staged, err)
		}
		if n == 0 || n > 32 {
			t.Errorf("staged=%v: the sandbox held %d processes with a limit of 32 (%v)", staged, n, err)
		}
		// A stage well under the limit runs although the user has more than 32
		// processes on the host.
		var out bytes.Buffer
		spec.Command = []string{"/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done; kill $(jobs -p)"}
		spec.Stdout, spec.Stderr = &out, &out
		if code, err := Run(context.Background(), h, spec); err != nil || code != 0 {
			t.Errorf("staged=%v: 10 processes under a limit of 32: %d %v\n%s", staged, code, err, out.String())
		}
	}
}

func delegatedChild(t *testing.T) {
	h := childHost(t)
	if h.ProcessLimit != limitCgroupV1 || h.MemoryLimit != limitCgroupV1 {
		t.Fatalf("delegated cgroup not used: process limit %q, memory limit %q", h.ProcessLimit, h.MemoryLimit)
	}
	spec := Spec{Root: busyboxRoot(t), Tree: t.TempDir(), MaxProcs: 32}
	if _, err := countedProcesses(t, h, spec); !errors.Is(err, ErrProcessLimit) {
		t.Errorf("fork storm: %v, want ErrProcessLimit", err)
	}
	spec.MaxMemory, spec.TmpSize = 32<<20, 256<<20
	if _, err := memoryHog(t, h, spec); !errors.Is(err, ErrMemoryLimit) {
		t.Errorf("memory hog: %v, want ErrMemoryLimit", err)
	}
	if left := ownCgroups(t); len(left) > 0 {
		t.Errorf("sandbox cgroups left behind: %v", left)
	}
}

// delegateCgroups makes a pids and a memory cgroup (v1) below the test's own,
// owned by nobody as an administrator delegates a subtree, and returns their
// cgroup.procs files. They are removed when the test ends.
func delegateCgroups(t *testing.T, h *Host) []string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to delegate a cgroup")
	}
	p := findCgroupParents()
	if p.v1Pids == "" || p.v1Memory == "" {
		t.Skip("no cgroup v1 pids and memory hierarchies here (a v2 subtree cannot hold the test and enable controllers)")
	}
	var procs []string
	for _, parent := range []string{p.v1Pids, p.v1Memory} {
		dir := filepath.Join(parent, fmt.Sprintf("strata-test-delegated-%d", os.Getpid()))
		must(t, os.Mkdir(dir, 0o755))
		t.Cleanup(func() {
			if err := syscall.Rmdir(dir); err != nil {
				t.Errorf("remove delegated cgroup: %v", err)
			}
		})
		for _, f := range []string{"", "cgroup.procs", "tasks"} {
			must(t, os.Chown(filepath.Join(dir, f), 65534, 65534))
		}
		procs = append(procs, filepath.Join(dir, "cgroup.procs"))
	}
	return procs
}

// memoryHog fills /tmp, whose pages count against the sandbox's memory.
func memoryHog(t *testing.T, h *Host, spec Spec) (string, error) {
	t.Helper()
	var out bytes.Buffer
	spec.Command = []string{"/bin/sh", "-c", "head -c 200000000 /dev/zero > /tmp/fill; echo exit $?"}
	spec.Stdout, spec.Stderr = &out, &out
	_, err := Run(context.Background(), h, spec)
	return out.String(), err
}

// TestSecurityRow35MemoryLimit: RELIABILITY row 35, a stage that uses more
// memory than its limit is killed and fails with ErrMemoryLimit; /tmp is
// bounded by default.
func TestSecurityRow35MemoryLimit(t *testing.T) {
	h := host(t)
	if h.MemoryLimit == "" {
		t.Skip("no writable memory cgroup here (doctor reports it)")
	}
	for _, staged := range []bool{false, true} {
		spec := Spec{Root: busyboxRoot(t), MaxMemory: 32 << 20, TmpSize: 256 << 20}
		if staged {
			spec.Lower, spec.Upper = []string{t.TempDir()}, t.TempDir()
		} else {
			spec.Tree = t.TempDir()
		}
		out, err := memoryHog(t, h, spec)
		if !errors.Is(err, ErrMemoryLimit) || !strings.Contains(err.Error(), "more than 32MiB of memory") {
			t.Errorf("staged=%v: err = %v, want ErrMemoryLimit naming 32MiB\n%s", staged, err, out)
		}
	}
	// Under the limit the same stage succeeds.
	out, err := memoryHog(t, h, Spec{Root: busyboxRoot(t), Tree: t.TempDir(), MaxMemory: 512 << 20, TmpSize: 256 << 20})
	if err != nil || !strings.Contains(out, "exit 0") {
		t.Errorf("under the limit: %v\n%s", err, out)
	}
	if left := ownCgroups(t); len(left) > 0 {
		t.Errorf("sandbox cgroups left behind: %v", left)
	}
}

// TestDefaultTmpSize: /tmp is bounded by default, by min(RAM/4, 4 GiB).
func TestDefaultTmpSize(t *testing.T) {
	code, out := sh(t, Spec{Root: busyboxRoot(t), Tree: t.TempDir()}, "stat -f -c '%b %S' /tmp")
	var blocks, bsize int64
	if _, err := fmt.Sscanf(out, "%d %d", &blocks, &bsize); code != 0 || err != nil {
		t.Fatalf("stat /tmp: %d %q %v", code, out, err)
	}
	if got, want := blocks*bsize, DefaultTmpSize(); got != want || want > MaxDefaultTmpSize {
		t.Errorf("/tmp is %d bytes, want DefaultTmpSize() = %d", got, want)
	}
}
