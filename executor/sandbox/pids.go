package sandbox

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// bwrap enforces no resource limits, so a fork bomb in a stage would take the host
// down with it (RELIABILITY row 20). Each sandbox gets a pids cgroup of its own
// with pids.max set: cgroup v2 where its pids controller can be used (the child
// is cloned straight into the cgroup, CLONE_INTO_CGROUP), else the v1 pids
// hierarchy. A cgroup needs write access to the hierarchy (root, or a delegated
// subtree); without one stages run unlimited, and doctor says so.

// DefaultMaxProcs is the process limit of a sandbox when [Spec.MaxProcs] is 0.
const DefaultMaxProcs = 4096

// ErrProcessLimit is wrapped by a Run error when the stage tried to create more
// processes than [Spec.MaxProcs].
var ErrProcessLimit = errors.New("process limit reached")

// Cgroup roots, variables so tests can point them elsewhere.
var (
	cgroupV2Root = "/sys/fs/cgroup"
	cgroupV1Pids = "/sys/fs/cgroup/pids"
)

// pidsCgroup is one sandbox's cgroup.
type pidsCgroup struct {
	dir string
	v2  bool
	fd  int // v2: an O_PATH descriptor of dir for CLONE_INTO_CGROUP; else -1
}

// pidsHierarchy returns where sandbox cgroups can be made: the parent directory
// and whether it is cgroup v2, or "" when no writable pids controller exists.
func pidsHierarchy() (string, bool) {
	if b, err := os.ReadFile(filepath.Join(cgroupV2Root, "cgroup.subtree_control")); err == nil &&
		strings.Contains(" "+strings.TrimSpace(string(b))+" ", " pids ") && writable(cgroupV2Root) {
		return cgroupV2Root, true
	}
	// The v1 pids hierarchy's root has cgroup.procs but no pids.max of its own.
	if _, err := os.Stat(filepath.Join(cgroupV1Pids, "cgroup.procs")); err == nil && writable(cgroupV1Pids) {
		return cgroupV1Pids, false
	}
	return "", false
}

func writable(dir string) bool { return syscall.Access(dir, 2 /* W_OK */) == nil }

// newPidsCgroup makes a cgroup limited to max processes, or returns nil when the
// host has no usable pids controller.
func newPidsCgroup(max int) (*pidsCgroup, error) {
	parent, v2 := pidsHierarchy()
	if parent == "" {
		return nil, nil
	}
	var r [6]byte
	rand.Read(r[:])
	dir := filepath.Join(parent, fmt.Sprintf("strata-%d-%s", os.Getpid(), hex.EncodeToString(r[:])))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox: pids cgroup: %w", err)
	}
	c := &pidsCgroup{dir: dir, v2: v2, fd: -1}
	if err := os.WriteFile(filepath.Join(dir, "pids.max"), []byte(strconv.Itoa(max)), 0o644); err != nil {
		c.remove()
		return nil, fmt.Errorf("sandbox: pids cgroup: %w", err)
	}
	if v2 {
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			c.remove()
			return nil, fmt.Errorf("sandbox: pids cgroup: %w", err)
		}
		c.fd = fd
	}
	return c, nil
}

// prepare makes the process start inside the cgroup where the kernel can do that
// atomically (v2).
func (c *pidsCgroup) prepare(attr *syscall.SysProcAttr) {
	if c != nil && c.v2 {
		attr.UseCgroupFD = true
		attr.CgroupFD = c.fd
	}
}

// needsHelper reports whether the sandbox must start through the helper, which
// joins the cgroup before it execs bwrap (v1 cannot start a process inside).
func (c *pidsCgroup) needsHelper() bool { return c != nil && !c.v2 }

// procs is the cgroup's cgroup.procs file.
func (c *pidsCgroup) procs() string { return filepath.Join(c.dir, "cgroup.procs") }

// hitLimit reports whether a fork failed because of pids.max.
func (c *pidsCgroup) hitLimit() bool {
	if c == nil {
		return false
	}
	f, err := os.Open(filepath.Join(c.dir, "pids.events"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == "max" {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n > 0
		}
	}
	return false
}

// remove deletes the cgroup once its processes are gone (the pid namespace is
// torn down when the sandbox init exits, which may take a moment).
func (c *pidsCgroup) remove() {
	if c == nil {
		return
	}
	if c.fd >= 0 {
		syscall.Close(c.fd)
		c.fd = -1
	}
	// The exited processes leave the cgroup within a millisecond or so: poll
	// briefly first, then back off (about a second in all).
	for wait := 100 * time.Microsecond; wait < 500*time.Millisecond; wait *= 2 {
		if err := syscall.Rmdir(c.dir); err == nil || errors.Is(err, syscall.ENOENT) {
			return
		}
		time.Sleep(wait)
	}
	syscall.Rmdir(c.dir)
}
