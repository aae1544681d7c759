package sandbox

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// bwrap enforces no resource limits, so a fork bomb or a memory hog in a stage
// would take the host down with it (RELIABILITY rows 20 and 35). Each sandbox
// gets a cgroup of its own with pids.max and a memory limit: cgroup v2 where
// its controllers can be used (the child is cloned straight into the cgroup,
// CLONE_INTO_CGROUP), else the v1 pids and memory hierarchies. The cgroup is
// made inside the cgroup strata itself runs in, so limits an administrator set
// on strata (a systemd unit's MemoryMax, a container's) still bound every stage,
// and a subtree delegated to an unprivileged user works the same way as root's.
// One exception: on cgroup v2, strata's own cgroup holds strata, so it can give
// children controllers only where a manager enabled them; otherwise root falls
// back to the hierarchy's root, where stages have their own limits but are no
// longer bound by the unit's (inside a container's cgroup namespace that root
// is the container's). Delegating a subtree to strata keeps them inside.
// Without a writable cgroup, rootless stages get RLIMIT_NPROC (see
// rlimitProcs) and no memory limit but the bounded /tmp; doctor says so.

// DefaultMaxProcs is the process limit of a sandbox when [Spec.MaxProcs] is 0.
const DefaultMaxProcs = 4096

// ErrProcessLimit is wrapped by a Run error when the stage tried to create more
// processes than [Spec.MaxProcs] (detected where a pids cgroup counts it).
var ErrProcessLimit = errors.New("process limit reached")

// ErrMemoryLimit is wrapped by a Run error when the kernel killed a process of
// the stage because the sandbox used more than [Spec.MaxMemory].
var ErrMemoryLimit = errors.New("memory limit reached")

// Cgroup locations, variables so tests can point them elsewhere.
var (
	cgroupV2Root   = "/sys/fs/cgroup"
	cgroupV1Root   = "/sys/fs/cgroup"
	procSelfCgroup = "/proc/self/cgroup"
)

// Values of Host.ProcessLimit and Host.MemoryLimit.
const (
	limitCgroupV2 = "cgroup v2"
	limitCgroupV1 = "cgroup v1"
	limitRlimit   = "RLIMIT_NPROC"
)

// cgroupParents says where sandbox cgroups are made: a cgroup v2 directory
// whose subtree has the pids (and maybe memory) controller, or the v1 pids
// and memory directories strata runs in. Empty strings mean none.
type cgroupParents struct {
	v2       string
	v2Memory bool
	v1Pids   string
	v1Memory string
}

// findCgroupParents looks at /proc/self/cgroup for writable places.
func findCgroupParents() cgroupParents {
	var p cgroupParents
	b, err := os.ReadFile(procSelfCgroup)
	if err != nil {
		return p
	}
	own := map[string]string{} // controller ("" for v2) → path
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			own[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			own[c] = parts[2]
		}
	}
	if path, ok := own[""]; ok {
		// strata's own cgroup holds strata, so cgroup v2's no-internal-process
		// rule lets it enable controllers for children only at the root (or
		// where a manager did it for us): try both.
		for _, dir := range []string{filepath.Join(cgroupV2Root, path), cgroupV2Root} {
			ctl, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
			if err != nil || !writable(dir) {
				continue
			}
			fields := " " + strings.Join(strings.Fields(string(ctl)), " ") + " "
			if strings.Contains(fields, " pids ") {
				p.v2, p.v2Memory = dir, strings.Contains(fields, " memory ")
				return p
			}
		}
	}
	v1 := func(controller string) string {
		path, ok := own[controller]
		if !ok {
			return ""
		}
		dir := filepath.Join(cgroupV1Root, controller, path)
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil || !writable(dir) {
			return ""
		}
		return dir
	}
	p.v1Pids, p.v1Memory = v1("pids"), v1("memory")
	return p
}

func writable(dir string) bool { return syscall.Access(dir, 2 /* W_OK */) == nil }

// processLimit and memoryLimit describe the parents for Host.
func (p cgroupParents) processLimit(root bool) string {
	switch {
	case p.v2 != "":
		return limitCgroupV2
	case p.v1Pids != "":
		return limitCgroupV1
	case !root:
		return limitRlimit
	}
	return ""
}

func (p cgroupParents) memoryLimit() string {
	switch {
	case p.v2 != "" && p.v2Memory:
		return limitCgroupV2
	case p.v2 == "" && p.v1Memory != "":
		return limitCgroupV1
	}
	return ""
}

// cgroup is one sandbox's cgroup: one directory on v2, one per hierarchy on v1.
type cgroup struct {
	v2     bool
	dirs   []string // every directory made, removed afterwards
	pids   string   // directory with pids.max, "" when not limited
	memory string   // directory with the memory limit, "" when not limited
	fd     int      // v2: an O_PATH descriptor of the directory for CLONE_INTO_CGROUP; else -1
}

// newCgroup makes a cgroup limited to maxProcs processes and maxMemory bytes
// under the parents, or returns nil when there are none.
func newCgroup(p cgroupParents, maxProcs int, maxMemory int64) (*cgroup, error) {
	if p.v2 == "" && p.v1Pids == "" && p.v1Memory == "" {
		return nil, nil
	}
	sweepCgroupsOnce(p)
	var r [6]byte
	rand.Read(r[:])
	name := fmt.Sprintf("strata-%d-%s", os.Getpid(), hex.EncodeToString(r[:]))
	c := &cgroup{v2: p.v2 != "", fd: -1}
	fail := func(err error) (*cgroup, error) {
		c.remove()
		return nil, fmt.Errorf("sandbox: cgroup: %w", err)
	}
	mk := func(parent string) (string, error) {
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return "", err
		}
		c.dirs = append(c.dirs, dir)
		return dir, nil
	}
	mem := strconv.FormatInt(maxMemory, 10)
	if c.v2 {
		dir, err := mk(p.v2)
		if err != nil {
			return fail(err)
		}
		c.pids = dir
		if p.v2Memory {
			c.memory = dir
			if err := writeCgroup(dir, "memory.max", mem); err != nil {
				return fail(err)
			}
			// Without swap.max the stage could page out past its limit, and
			// without oom.group one killed process could leave the rest hanging.
			optionalCgroup(dir, "memory.swap.max", "0")
			optionalCgroup(dir, "memory.oom.group", "1")
		}
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(err)
		}
		c.fd = fd
	} else {
		if p.v1Pids != "" {
			dir, err := mk(p.v1Pids)
			if err != nil {
				return fail(err)
			}
			c.pids = dir
		}
		if p.v1Memory != "" {
			dir, err := mk(p.v1Memory)
			if err != nil {
				return fail(err)
			}
			c.memory = dir
			if err := writeCgroup(dir, "memory.limit_in_bytes", mem); err != nil {
				return fail(err)
			}
			// memsw (memory plus swap) exists only with swap accounting.
			optionalCgroup(dir, "memory.memsw.limit_in_bytes", mem)
		}
	}
	if c.pids != "" {
		if err := writeCgroup(c.pids, "pids.max", strconv.Itoa(maxProcs)); err != nil {
			return fail(err)
		}
	}
	return c, nil
}

func writeCgroup(dir, file, value string) error {
	return os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644)
}

// optionalCgroup writes a setting a kernel may lack (no swap accounting, an
// older kernel); its absence weakens the limit but does not stop the stage.
func optionalCgroup(dir, file, value string) {
	_ = writeCgroup(dir, file, value)
}

// prepare makes the process start inside the cgroup where the kernel can do that
// atomically (v2).
func (c *cgroup) prepare(attr *syscall.SysProcAttr) {
	if c != nil && c.v2 {
		attr.UseCgroupFD = true
		attr.CgroupFD = c.fd
	}
}

// needsJoin reports whether the sandbox must be moved into the cgroup after it
// started (v1 cannot start a process inside a cgroup).
func (c *cgroup) needsJoin() bool { return c != nil && !c.v2 }

// procs are the cgroup.procs files to join.
func (c *cgroup) procs() []string {
	var out []string
	for _, d := range c.dirs {
		out = append(out, filepath.Join(d, "cgroup.procs"))
	}
	return out
}

// limitsProcs reports whether a pids cgroup counts the sandbox's processes.
func (c *cgroup) limitsProcs() bool { return c != nil && c.pids != "" }

// hitProcessLimit reports whether a fork failed because of pids.max.
func (c *cgroup) hitProcessLimit() bool {
	if c == nil || c.pids == "" {
		return false
	}
	return cgroupCounter(filepath.Join(c.pids, "pids.events"), "max") > 0
}

// oomKilled reports whether the kernel killed a process for the memory limit.
func (c *cgroup) oomKilled() bool {
	if c == nil || c.memory == "" {
		return false
	}
	file := "memory.oom_control" // v1: "oom_kill N" since Linux 4.13
	if c.v2 {
		file = "memory.events"
	}
	return cgroupCounter(filepath.Join(c.memory, file), "oom_kill") > 0
}

// cgroupCounter reads "key N" from a flat-keyed cgroup file, or -1.
func cgroupCounter(file, key string) int64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return -1
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// remove deletes the cgroup once its processes are gone (the pid namespace is
// torn down when the sandbox init exits, which may take a moment).
func (c *cgroup) remove() {
	if c == nil {
		return
	}
	if c.fd >= 0 {
		syscall.Close(c.fd)
		c.fd = -1
	}
	for _, dir := range c.dirs {
		// The exited processes leave the cgroup within a millisecond or so:
		// poll briefly first, then back off (about a second in all).
		for wait := 100 * time.Microsecond; ; wait *= 2 {
			err := syscall.Rmdir(dir)
			if err == nil || errors.Is(err, syscall.ENOENT) || wait > 500*time.Millisecond {
				break
			}
			time.Sleep(wait)
		}
	}
	c.dirs = nil
}

var sweptCgroups sync.Once

// sweepCgroupsOnce removes the empty sandbox cgroups strata processes that
// were killed (kill -9) left behind, once per process: a cgroup is named
// strata-<pid>-<random>, and one whose pid no longer exists is an orphan.
// A cgroup that still holds processes cannot be removed, so a live sandbox is
// never touched.
func sweepCgroupsOnce(p cgroupParents) {
	sweptCgroups.Do(func() {
		for _, parent := range []string{p.v2, p.v1Pids, p.v1Memory} {
			if parent == "" {
				continue
			}
			dirs, _ := filepath.Glob(filepath.Join(parent, "strata-*"))
			for _, d := range dirs {
				if ownerDead(filepath.Base(d), "strata-") {
					syscall.Rmdir(d)
				}
			}
		}
	})
}

// ownerDead reports whether name is prefix<pid>-... and no process pid exists.
func ownerDead(name, prefix string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return false
	}
	s, _, ok := strings.Cut(rest, "-")
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}
