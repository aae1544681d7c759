package sandbox

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Without root a sandbox's user namespace maps one id: a command's chown to any
// other owner fails with EINVAL, and a command that ignores the failure
// (chown ... || true, a package manager's post-install script) gives another
// tree than as root, under the same key. Spec.WatchOwners catches it: the
// staging helper installs a filter that hands chown, lchown, fchown and
// fchownat with an owner other than root (0) or "unchanged" (-1) to Run over a
// seccomp user-notification descriptor; Run answers EPERM and reports the call
// (ErrOwnerChange) once the command is done. The filter is the helper's, below
// bwrap's own, so it needs no support from bwrap.

// ErrOwnerChange is wrapped by Run when a command under Spec.WatchOwners tried to
// give a file an owner the sandbox cannot set.
var ErrOwnerChange = errors.New("the command changed a file's owner")

// retUserNotif hands the call to the supervisor.
const retUserNotif = unix.SECCOMP_RET_USER_NOTIF

// ownerCalls are the calls that set owners, with the argument indexes of the
// uid and gid.
var ownerCalls = []struct {
	name     string
	uid, gid int
}{{"chown", 1, 2}, {"lchown", 1, 2}, {"fchown", 1, 2}, {"fchownat", 2, 3},
	{"chown32", 1, 2}, {"lchown32", 1, 2}, {"fchown32", 1, 2}}

// legacy16 reports whether the call name of ar takes 16-bit ids: the old
// chown, lchown and fchown of the 32-bit architectures that also have the
// ...32 calls (i386, arm). The kernel reads only their low 16 bits, and
// "unchanged" is 0xffff there.
func legacy16(ar *sysArch, name string) bool {
	_, ok := ar.nr(name + "32")
	return ok
}

// ownerWatchProgram is the filter: the owner calls of the native and 32-bit
// architectures with an id other than 0 or "unchanged" (compared as the
// kernel reads the id: 32 bits, or the low 16 of a legacy call) notify;
// everything else is allowed, for the main filter to judge.
var ownerWatchProgram = sync.OnceValues(func() ([]bpf.RawInstruction, error) {
	arches := filterArches(runtime.GOARCH)
	if arches == nil {
		return nil, fmt.Errorf("sandbox: no system call table for %s", runtime.GOARCH)
	}
	ins, err := ownerWatchInstructions(arches)
	if err != nil {
		return nil, err
	}
	return bpf.Assemble(ins)
})

// ownerWatchInstructions is the owner watch's program for arches.
func ownerWatchInstructions(arches []*sysArch) ([]bpf.Instruction, error) {
	var a assembler
	a.emit(bpf.LoadAbsolute{Off: offArch, Size: 4})
	sections := make([]label, len(arches))
	for i, ar := range arches {
		sections[i] = a.newLabel()
		a.jumpIf(bpf.JumpEqual, ar.ID, sections[i], next)
	}
	a.emit(bpf.RetConstant{Val: retAllow})
	notify := a.newLabel()
	for i, ar := range arches {
		a.set(sections[i])
		a.emit(bpf.LoadAbsolute{Off: offNr, Size: 4})
		var checks []label
		var calls []int
		for j, c := range ownerCalls {
			if nr, ok := ar.nr(c.name); ok {
				l := a.newLabel()
				checks = append(checks, l)
				calls = append(calls, j)
				a.jumpIf(bpf.JumpEqual, uint32(nr), l, next)
			}
		}
		a.emit(bpf.RetConstant{Val: retAllow})
		for k, l := range checks {
			c := ownerCalls[calls[k]]
			unchanged := uint32(0xffffffff)
			if legacy16(ar, c.name) {
				unchanged = 0xffff
			}
			a.set(l)
			for _, arg := range []int{c.uid, c.gid} {
				a.emit(bpf.LoadAbsolute{Off: uint32(offArg0 + 8*arg), Size: 4})
				if unchanged == 0xffff {
					a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xffff})
				}
				ok := a.newLabel()
				a.jumpIf(bpf.JumpEqual, 0, ok, next)
				a.jumpIf(bpf.JumpEqual, unchanged, ok, notify)
				a.set(ok)
			}
			a.emit(bpf.RetConstant{Val: retAllow})
		}
	}
	a.set(notify)
	a.emit(bpf.RetConstant{Val: retUserNotif})
	return a.assemble()
}

// installOwnerWatch installs the filter in this process (the helper, right
// before it execs bwrap) and returns the notification descriptor.
func installOwnerWatch() (int, error) {
	raw, err := ownerWatchProgram()
	if err != nil {
		return -1, err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// bwrap sets no_new_privs itself for its own filter; doing it first lets
	// an unprivileged process install this one.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, fmt.Errorf("no_new_privs: %w", err)
	}
	fd, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(filter)
	if errno != 0 {
		return -1, fmt.Errorf("install owner watch: %w", errno)
	}
	return int(fd), nil
}

// sendFD sends fd over the unix socket sock.
func sendFD(sock, fd int) error {
	return unix.Sendmsg(sock, []byte{0}, unix.UnixRights(fd), nil, 0)
}

// recvFD receives a descriptor sent with sendFD; an error when the peer
// closed without sending, or the connection was closed.
func recvFD(c *net.UnixConn) (int, error) {
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return -1, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, errors.New("no descriptor received")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, errors.New("no descriptor received")
	}
	return fds[0], nil
}

// seccompNotif and seccompNotifResp are struct seccomp_notif and
// seccomp_notif_resp.
type seccompNotif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Nr    int32
	Arch  uint32
	IP    uint64
	Args  [6]uint64
}

type seccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// ownerWatch answers the notifications of one sandbox's filter.
type ownerWatch struct {
	conn *net.UnixConn // Run's end of the socket the helper sends the descriptor on

	mu    sync.Mutex
	calls []string // what was refused, for the error
	done  chan struct{}
	stop  chan struct{}
}

func newOwnerWatch() (w *ownerWatch, helperEnd *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox: owner watch: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "owner-watch")
	c, err := net.FileConn(mine) // through the poller, so close ends a wait
	mine.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("sandbox: owner watch: %w", err)
	}
	w = &ownerWatch{conn: c.(*net.UnixConn), done: make(chan struct{}), stop: make(chan struct{})}
	go w.serve()
	return w, os.NewFile(uintptr(fds[1]), "owner-watch-helper"), nil
}

// serve receives the descriptor and answers until the sandbox is gone (the
// descriptor hangs up) or close is called. The stage waits in its call until
// it is answered, so serve runs from newOwnerWatch on.
func (w *ownerWatch) serve() {
	defer close(w.done)
	fd, err := recvFD(w.conn)
	if err != nil {
		return // the helper failed before; Run reports that
	}
	defer unix.Close(fd)
	calls := ownerCallsByNumber()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		n, err := unix.Poll(pfd, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if n == 0 || pfd[0].Revents&unix.POLLIN == 0 {
			if pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
				return
			}
			continue
		}
		var req seccompNotif
		if err := ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&req)); err != nil {
			continue // the caller died meanwhile (ENOENT), or a signal
		}
		call := calls[archCall{req.Arch, req.Nr}].describe(req.Args)
		w.mu.Lock()
		if len(w.calls) < 8 {
			w.calls = append(w.calls, call)
		}
		w.mu.Unlock()
		resp := seccompNotifResp{ID: req.ID, Error: -int32(unix.EPERM)}
		ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp))
	}
}

// archCall is a system call number of an architecture (AUDIT_ARCH_*).
type archCall struct {
	arch uint32
	nr   int32
}

// ownerCall is an owner call as the filter sees it on one architecture.
type ownerCall struct {
	name     string
	uid, gid int
	legacy16 bool
}

// ownerCallsByNumber maps the owner calls of the filter's architectures,
// once per process (every rootless command stage serves a watch).
var ownerCallsByNumber = sync.OnceValue(func() map[archCall]ownerCall {
	out := map[archCall]ownerCall{}
	for _, ar := range filterArches(runtime.GOARCH) {
		for _, c := range ownerCalls {
			if nr, ok := ar.nr(c.name); ok {
				out[archCall{ar.ID, int32(nr)}] = ownerCall{c.name, c.uid, c.gid, legacy16(ar, c.name)}
			}
		}
	}
	return out
})

// describe says what the call asked for, ids as the kernel reads them.
func (c ownerCall) describe(args [6]uint64) string {
	id := func(v uint64) int64 {
		if c.legacy16 {
			if uint16(v) == 0xffff {
				return -1
			}
			return int64(uint16(v))
		}
		return int64(int32(v))
	}
	name := c.name
	if name == "" {
		name = "an owner call"
	}
	return fmt.Sprintf("%s with owner %d:%d", name, id(args[c.uid]), id(args[c.gid]))
}

// close stops serving and returns an error wrapping ErrOwnerChange when a
// call was refused.
func (w *ownerWatch) close() error {
	close(w.stop)
	w.conn.Close()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.calls) == 0 {
		return nil
	}
	return &OwnerChangeError{Calls: w.calls}
}

// OwnerChangeError is what Run returns when a command under Spec.WatchOwners
// tried to set owners; it matches ErrOwnerChange.
type OwnerChangeError struct {
	// Calls describe the first calls refused, like "chown with owner 3000:3000".
	Calls []string
}

func (e *OwnerChangeError) Error() string {
	return "it called " + joinCalls(e.Calls) + ", which a sandbox without root cannot do (answered EPERM)"
}

// Is makes errors.Is(err, ErrOwnerChange) hold.
func (e *OwnerChangeError) Is(target error) bool { return target == ErrOwnerChange }

func joinCalls(calls []string) string {
	s := calls[0]
	if len(calls) > 1 {
		s += fmt.Sprintf(" (and %d more)", len(calls)-1)
	}
	return s
}

func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return errno
	}
}
