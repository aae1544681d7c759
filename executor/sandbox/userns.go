package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// As real root the sandbox keeps every uid and gid real, so stages can set
// owners. bwrap 0.8 can only map one id into a user namespace it creates
// (--unshare-user writes "0 0 1"), which would turn every other owner into
// nobody. Instead strata makes one user namespace whose map is the identity
// over all 2^32-1 ids and hands it to bwrap with --userns: owners work as
// before, but the stage's capabilities (CAP_CHOWN and friends) hold only
// inside that namespace, nothing it does is checked against the host's
// init namespace as root, and it gets the namespace's own key rings.

// identityUserns is a descriptor of a user namespace with the identity map,
// made once per process (a holder process lives just long enough to open it).
// Sharing it between sandboxes shares nothing a stage can reach: each sandbox
// has its own mount, pid, ipc, uts and net namespaces, and the seccomp filter
// refuses the key ring calls.
var identityUserns = sync.OnceValues(func() (*os.File, error) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		return nil, fmt.Errorf("sandbox: identity user namespace: %w", err)
	}
	full := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1<<32 - 1}}
	holder := exec.Command(cat)
	holder.Env = []string{}
	stdin, err := holder.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: identity user namespace: %w", err)
	}
	holder.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER, UidMappings: full, GidMappings: full,
		GidMappingsEnableSetgroups: true, Pdeathsig: syscall.SIGKILL,
	}
	if err := holder.Start(); err != nil {
		return nil, fmt.Errorf("sandbox: identity user namespace: %w", err)
	}
	// cat blocks on stdin until it is closed, so its namespace is there to open.
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", holder.Process.Pid))
	stdin.Close()
	holder.Wait()
	if err != nil {
		return nil, fmt.Errorf("sandbox: identity user namespace: %w", err)
	}
	return ns, nil
})

// rlimitProcs caps a rootless sandbox's processes where no pids cgroup can.
//
// RLIMIT_NPROC counts the processes of a user, but since Linux 5.14 the count
// is kept per user namespace: a process of the sandbox is charged to its uid
// in the sandbox's user namespace, checked against its own RLIMIT_NPROC, and
// to the real uid outside, checked only against the limit the namespace's
// creator (bwrap) had when it made the namespace. So the limit must be set
// inside the namespace, after bwrap made it: bwrap holds the sandbox back on
// --block-fd, Run sets RLIMIT_NPROC on the sandbox's first process with
// prlimit(2) and releases it. Every process of the stage descends from it, and
// the user's other processes on the host neither count nor are limited. (Set
// on bwrap before it starts, the limit would count every process the user runs
// on the host, and fail at once for a user with many.) Real root is exempt from
// RLIMIT_NPROC, so root relies on the cgroup.
type rlimitProcs struct {
	max  int
	r, w *os.File
}

func newRlimitProcs(max int) (*rlimitProcs, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: run: %w", err)
	}
	return &rlimitProcs{max: max, r: r, w: w}, nil
}

// apply limits the sandbox's first process (pid, a child of bwrap, parent)
// and lets it go on. On an error the sandbox stays blocked; the caller kills it.
func (l *rlimitProcs) apply(pid, parent int) error {
	if pp := parentPid(pid); pp != parent {
		return fmt.Errorf("set process limit: process %d is not bwrap's child (parent %d, bwrap %d)", pid, pp, parent)
	}
	lim := unix.Rlimit{Cur: uint64(l.max), Max: uint64(l.max)}
	if err := unix.Prlimit(pid, unix.RLIMIT_NPROC, &lim, nil); err != nil {
		return fmt.Errorf("set process limit: %w", err)
	}
	_, err := l.w.Write([]byte{0})
	l.w.Close()
	return err
}

func (l *rlimitProcs) close() {
	l.r.Close()
	l.w.Close()
}
