package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// As real root the sandbox keeps every uid and gid real, so stages can set
// owners. bwrap 0.8 can only map one id into a user namespace it creates
// (--unshare-user writes "0 0 1"), which would turn every other owner into
// nobody. Instead strata makes one user namespace whose map is the identity
// over all 2^32-1 ids and hands it to bwrap with --userns: owners work as
// before, but the stage's capabilities (CAP_CHOWN and friends) hold only
// inside that namespace, nothing it does is checked against the host's
// init namespace as root, and it gets the namespace's own key rings.

// Prewarm starts, in the background, the one-time setup the first sandbox of
// this process needs (as root, the identity user namespace), so that it
// overlaps with other work, such as compiling the workspace.
func Prewarm() {
	if os.Geteuid() == 0 {
		go identityUserns()
	}
}

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
