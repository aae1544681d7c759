// Command seccompprobe calls system calls strata's seccomp filter refuses, with
// arguments that are harmless where a call is allowed, and prints one line per
// call: "name errno" (errno 0 when the call succeeded). The sandbox tests build
// it static (CGO_ENABLED=0), for the host's architecture and for 386, and run
// it inside real sandboxes. A call the architecture lacks prints "name absent".
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func str(s string) uintptr {
	b, _ := unix.BytePtrFromString(s)
	return uintptr(unsafe.Pointer(b))
}

// absent marks a call this architecture does not have (kexec_file_load on
// 32-bit ones).
const absent = syscall.Errno(1 << 20)

// neg is -n as a system call argument (a special key ring id).
func neg(n int) uintptr { return uintptr(-n) }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "noop" {
		return
	}
	calls := []struct {
		name string
		call func() syscall.Errno
	}{
		{"add_key", func() syscall.Errno {
			_, _, e := unix.Syscall6(unix.SYS_ADD_KEY, str("user"), str("strata-probe"), str("x"), 1, neg(2) /* process keyring */, 0)
			return e
		}},
		{"keyctl", func() syscall.Errno {
			_, _, e := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, neg(4) /* user keyring */, 0)
			return e
		}},
		{"request_key", func() syscall.Errno {
			_, _, e := unix.Syscall6(unix.SYS_REQUEST_KEY, str("user"), str("strata-probe-none"), 0, 0, 0, 0)
			return e
		}},
		{"bpf", func() syscall.Errno { _, _, e := unix.Syscall(unix.SYS_BPF, 0xffff, 0, 0); return e }},
		{"perf_event_open", func() syscall.Errno {
			_, _, e := unix.Syscall6(unix.SYS_PERF_EVENT_OPEN, 0, 0, neg(1), neg(1), 0, 0)
			return e
		}},
		{"userfaultfd", func() syscall.Errno {
			fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0)
			if e == 0 {
				unix.Close(int(fd))
			}
			return e
		}},
		{"io_uring_setup", func() syscall.Errno { _, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 0, 0, 0); return e }},
		{"kexec_load", func() syscall.Errno { _, _, e := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0, 0, 0); return e }},
		{"kexec_file_load", func() syscall.Errno {
			if sysKexecFileLoad < 0 {
				return absent
			}
			_, _, e := unix.Syscall6(uintptr(sysKexecFileLoad), neg(1), neg(1), 0, 0, 0, 0)
			return e
		}},
		{"init_module", func() syscall.Errno { _, _, e := unix.Syscall(unix.SYS_INIT_MODULE, 0, 0, str("")); return e }},
		{"finit_module", func() syscall.Errno { _, _, e := unix.Syscall(unix.SYS_FINIT_MODULE, neg(1), str(""), 0); return e }},
		{"delete_module", func() syscall.Errno {
			_, _, e := unix.Syscall(unix.SYS_DELETE_MODULE, str("strata_probe_none"), 0, 0)
			return e
		}},
		{"open_by_handle_at", func() syscall.Errno {
			_, _, e := unix.Syscall(unix.SYS_OPEN_BY_HANDLE_AT, neg(1), 0, 0)
			return e
		}},
		{"syslog", func() syscall.Errno { _, _, e := unix.Syscall(unix.SYS_SYSLOG, 10 /* size of buffer */, 0, 0); return e }},
		{"setns", func() syscall.Errno { _, _, e := unix.Syscall(unix.SYS_SETNS, neg(1), 0, 0); return e }},
		{"unshare", func() syscall.Errno { _, _, e := unix.Syscall(unix.SYS_UNSHARE, unix.CLONE_NEWUSER, 0, 0); return e }},
		{"socket_vsock", func() syscall.Errno {
			fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
			if err == nil {
				unix.Close(fd)
				return 0
			}
			return err.(syscall.Errno)
		}},
		{"clone_newuser", func() syscall.Errno {
			// Go's fork/exec is a raw clone with these flags; the child only
			// exits.
			exe, _ := os.Executable()
			cmd := exec.Command(exe, "noop")
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
			var e syscall.Errno
			if err := cmd.Run(); errors.As(err, &e) {
				return e
			} else if err != nil {
				fmt.Fprintln(os.Stderr, "clone_newuser:", err)
				return unix.EIO
			}
			return 0
		}},
		{"clone3", func() syscall.Errno { _, _, e := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0); return e }},
		{"getpid", func() syscall.Errno { _, _, e := unix.Syscall(unix.SYS_GETPID, 0, 0, 0); return e }},
		{"socket_unix", func() syscall.Errno {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				return err.(syscall.Errno)
			}
			unix.Close(fd)
			return 0
		}},
	}
	for _, c := range calls {
		if e := c.call(); e == absent {
			fmt.Printf("%s absent\n", c.name)
		} else {
			fmt.Printf("%s %d\n", c.name, int(e))
		}
	}
	status, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "Seccomp:") {
			fmt.Println("seccomp", strings.Join(strings.Fields(l)[1:], " "))
		}
	}
}
