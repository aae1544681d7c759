package sandbox

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Every sandboxed command runs under a seccomp filter in the spirit of Docker's
// default profile (docs/security.md, "Sandbox: seccomp filter"). It is a deny
// list: everything is allowed except the calls below, which fail with EPERM.
// Docker's profile is an allow list; a deny list keeps working when a newer
// toolchain in a build root uses a system call this strata does not know yet
// (under an allow list glibc gets EPERM instead of ENOSYS and does not fall
// back). bwrap installs the filter on its sandbox init and on the command,
// right before exec, so bwrap's own set-up is not filtered.

// deniedSyscalls are refused with EPERM on every architecture whose table
// has them, grouped by why.
var deniedSyscalls = []struct {
	why   string
	names []string
}{
	{"kernel keyrings are not namespaced: a stage could read or plant keys of the user strata runs as",
		[]string{"add_key", "keyctl", "request_key"}},
	{"kernel interfaces with a long record of privilege escalations",
		[]string{"bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "lookup_dcookie"}},
	{"kernel modules, kexec and reboot",
		[]string{"init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
			"kexec_load", "kexec_file_load", "reboot"}},
	{"system-wide state: clocks, swap, accounting, quotas, the kernel log, the terminal, NUMA placement",
		[]string{"settimeofday", "clock_settime", "clock_settime64", "stime", "swapon", "swapoff", "acct",
			"quotactl", "quotactl_fd", "syslog", "vhangup", "mbind", "migrate_pages", "move_pages",
			"get_mempolicy", "set_mempolicy", "set_mempolicy_home_node"}},
	{"raw I/O ports", []string{"iopl", "ioperm"}},
	{"file handles bypass path resolution (Docker's \"shocker\" escape)", []string{"open_by_handle_at"}},
	{"other processes' descriptors and memory advice", []string{"kcmp", "pidfd_getfd", "process_madvise"}},
	{"namespaces and mounts: bwrap made them; a stage gets no new ones (nested user namespaces open the kernel's attack surface)",
		[]string{"unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
			"open_tree_attr", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "sethostname", "setdomainname"}},
	{"security modules and fanotify", []string{"lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules", "fanotify_init"}},
	{"obsolete calls", []string{"_sysctl", "sysfs", "ustat", "uselib", "nfsservctl", "afs_syscall", "getpmsg", "putpmsg",
		"security", "tuxcall", "vserver", "vm86", "vm86old"}},
}

// Calls refused only for some arguments.
const (
	// cloneNamespaces are the namespace flags of clone(2): a new user
	// namespace would give the stage capabilities again.
	cloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
		unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
	// afVsock is refused for socket(2): vsock is not network-namespaced, so
	// a stage without network could still reach the hypervisor or host.
	afVsock = unix.AF_VSOCK
)

// Filter return values.
const (
	retAllow  = unix.SECCOMP_RET_ALLOW
	retEPERM  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	retKill   = unix.SECCOMP_RET_KILL_PROCESS
)

// Offsets into struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16 // the low 32 bits on a little-endian machine
)

// x32Bit marks x32 system calls, which share AUDIT_ARCH_X86_64.
const x32Bit = 0x40000000

// filterArches returns the architectures the filter admits when strata runs
// as goarch: the native one first, then the 32-bit one its kernel also runs
// (i386 binaries on x86_64, arm on arm64), so a 32-bit build root works and
// cannot call around the list by its own syscall numbers (socketcall(2), whose
// arguments are behind a pointer, still reaches AF_VSOCK: docs/security.md).
// Nil means seccomp is unsupported here.
func filterArches(goarch string) []*sysArch {
	switch goarch {
	case "amd64":
		return []*sysArch{archX86_64, archI386}
	case "arm64":
		return []*sysArch{archAARCH64, archARM}
	case "386":
		return []*sysArch{archI386}
	case "arm":
		return []*sysArch{archARM}
	}
	return nil
}

// seccompProgram is the filter for this machine as the bytes bwrap reads from
// its --seccomp descriptor (an array of struct sock_filter), or nil where the
// architecture has no syscall table (riscv64, ppc64le, s390x): stages then run
// without a filter and Host.Seccomp is false.
var seccompProgram = sync.OnceValues(func() ([]byte, error) {
	arches := filterArches(runtime.GOARCH)
	if arches == nil {
		return nil, nil
	}
	ins, err := filterInstructions(arches)
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(ins)
	if err != nil {
		return nil, fmt.Errorf("sandbox: seccomp filter: %w", err)
	}
	b := make([]byte, 0, 8*len(raw))
	for _, r := range raw {
		// struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; } in host order;
		// every architecture above is little-endian.
		b = binary.LittleEndian.AppendUint16(b, r.Op)
		b = append(b, r.Jt, r.Jf)
		b = binary.LittleEndian.AppendUint32(b, r.K)
	}
	return b, nil
})

// filterInstructions builds the program: dispatch on the audit architecture
// (anything else is killed), then per architecture refuse x32 calls with
// ENOSYS, clone3 with ENOSYS (its flags are behind a pointer; glibc falls back
// to clone), clone with namespace flags and socket(AF_VSOCK) with EPERM, the
// deny list with EPERM, and allow the rest.
func filterInstructions(arches []*sysArch) ([]bpf.Instruction, error) {
	var a assembler
	a.emit(bpf.LoadAbsolute{Off: offArch, Size: 4})
	sections := make([]label, len(arches))
	for i, ar := range arches {
		sections[i] = a.newLabel()
		a.jumpIf(bpf.JumpEqual, ar.ID, sections[i], next)
	}
	a.emit(bpf.RetConstant{Val: retKill})
	for i, ar := range arches {
		a.set(sections[i])
		deny, clone, socket := a.newLabel(), a.newLabel(), a.newLabel()
		a.emit(bpf.LoadAbsolute{Off: offNr, Size: 4})
		if ar.ID == archX86_64.ID {
			a.ret(bpf.JumpGreaterOrEqual, x32Bit, retENOSYS)
		}
		if nr, ok := ar.nr("clone3"); ok {
			a.ret(bpf.JumpEqual, uint32(nr), retENOSYS)
		}
		if nr, ok := ar.nr("clone"); ok {
			a.jumpIf(bpf.JumpEqual, uint32(nr), clone, next)
		}
		if nr, ok := ar.nr("socket"); ok {
			a.jumpIf(bpf.JumpEqual, uint32(nr), socket, next)
		}
		for _, g := range deniedSyscalls {
			for _, name := range g.names {
				if nr, ok := ar.nr(name); ok {
					a.jumpIf(bpf.JumpEqual, uint32(nr), deny, next)
				}
			}
		}
		a.emit(bpf.RetConstant{Val: retAllow})
		a.set(clone)
		a.emit(bpf.LoadAbsolute{Off: offArg0, Size: 4})
		a.jumpIf(bpf.JumpBitsSet, cloneNamespaces, deny, next)
		a.emit(bpf.RetConstant{Val: retAllow})
		a.set(socket)
		a.emit(bpf.LoadAbsolute{Off: offArg0, Size: 4})
		a.jumpIf(bpf.JumpEqual, afVsock, deny, next)
		a.emit(bpf.RetConstant{Val: retAllow})
		a.set(deny)
		a.emit(bpf.RetConstant{Val: retEPERM})
	}
	return a.assemble()
}

// assembler resolves forward jumps to labels in a classic BPF program.
type assembler struct {
	ins    []bpf.Instruction
	jumps  []pendingJump
	labels []int // instruction index of each label, -1 until set
}

type label int

// next is the label of the instruction after a jump.
const next label = -1

type pendingJump struct {
	at              int
	onTrue, onFalse label
}

func (a *assembler) emit(in bpf.Instruction) { a.ins = append(a.ins, in) }

func (a *assembler) newLabel() label {
	a.labels = append(a.labels, -1)
	return label(len(a.labels) - 1)
}

func (a *assembler) set(l label) { a.labels[l] = len(a.ins) }

func (a *assembler) jumpIf(cond bpf.JumpTest, val uint32, t, f label) {
	a.jumps = append(a.jumps, pendingJump{at: len(a.ins), onTrue: t, onFalse: f})
	a.emit(bpf.JumpIf{Cond: cond, Val: val})
}

// ret returns v when the accumulator passes cond against val.
func (a *assembler) ret(cond bpf.JumpTest, val, v uint32) {
	a.emit(bpf.JumpIf{Cond: cond, Val: val, SkipFalse: 1})
	a.emit(bpf.RetConstant{Val: v})
}

func (a *assembler) assemble() ([]bpf.Instruction, error) {
	skip := func(at int, l label) (uint8, error) {
		if l == next {
			return 0, nil
		}
		to := a.labels[l]
		d := to - at - 1
		if to < 0 || d < 0 || d > 255 {
			return 0, fmt.Errorf("sandbox: seccomp filter: jump from %d to label %d (%d) out of range", at, l, to)
		}
		return uint8(d), nil
	}
	for _, j := range a.jumps {
		in := a.ins[j.at].(bpf.JumpIf)
		var err error
		if in.SkipTrue, err = skip(j.at, j.onTrue); err != nil {
			return nil, err
		}
		if in.SkipFalse, err = skip(j.at, j.onFalse); err != nil {
			return nil, err
		}
		a.ins[j.at] = in
	}
	return a.ins, nil
}
