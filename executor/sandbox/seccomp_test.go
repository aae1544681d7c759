package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompData is struct seccomp_data of a little-endian machine as x/net/bpf's
// VM sees it: the kernel loads words in host order, the VM in network order,
// so each 32-bit word is stored big-endian at the offset the kernel reads it.
func seccompData(auditArch uint32, nr int, arg0 uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[offNr:], uint32(nr))
	binary.BigEndian.PutUint32(b[offArch:], auditArch)
	binary.BigEndian.PutUint32(b[offArg0:], uint32(arg0))
	binary.BigEndian.PutUint32(b[offArg0+4:], uint32(arg0>>32))
	return b
}

// TestSeccompFilterDecisions runs the assembled program in x/net/bpf's VM for
// every architecture strata has a table for.
func TestSeccompFilterDecisions(t *testing.T) {
	for _, goarch := range []string{"amd64", "arm64", "386", "arm"} {
		t.Run(goarch, func(t *testing.T) {
			arches := filterArches(goarch)
			ins, err := filterInstructions(arches)
			if err != nil {
				t.Fatal(err)
			}
			vm, err := bpf.NewVM(ins)
			if err != nil {
				t.Fatal(err)
			}
			run := func(id uint32, nr int, arg0 uint64) uint32 {
				t.Helper()
				v, err := vm.Run(seccompData(id, nr, arg0))
				if err != nil {
					t.Fatal(err)
				}
				return uint32(v)
			}
			for _, a := range arches {
				nr := func(name string) int {
					n, ok := a.nr(name)
					if !ok {
						t.Fatalf("%s has no %s", a.Name, name)
					}
					return n
				}
				for _, g := range deniedSyscalls {
					for _, name := range g.names {
						if n, ok := a.nr(name); ok {
							if got := run(a.ID, n, 0); got != retEPERM {
								t.Errorf("%s %s: %#x, want EPERM", a.Name, name, got)
							}
						}
					}
				}
				for _, c := range []struct {
					name string
					arg0 uint64
					want uint32
				}{
					{"read", 0, retAllow},
					{"write", 0, retAllow},
					{"execve", 0, retAllow},
					{"ptrace", 0, retAllow},
					{"clone", uint64(unix.SIGCHLD), retAllow},
					{"clone", unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD, retAllow},
					{"clone", unix.CLONE_NEWUSER | uint64(unix.SIGCHLD), retEPERM},
					{"clone", unix.CLONE_NEWNS, retEPERM},
					{"clone", unix.CLONE_NEWNET, retEPERM},
					{"clone3", 0, retENOSYS},
					{"socket", unix.AF_INET, retAllow},
					{"socket", unix.AF_UNIX, retAllow},
					{"socket", unix.AF_VSOCK, retEPERM},
				} {
					if got := run(a.ID, nr(c.name), c.arg0); got != c.want {
						t.Errorf("%s %s(%#x): %#x, want %#x", a.Name, c.name, c.arg0, got, c.want)
					}
				}
				if got := run(a.ID, 0xfff, 0); got != retAllow {
					t.Errorf("%s: a system call newer than the table: %#x, want allowed", a.Name, got)
				}
			}
			// A foreign architecture is killed: it could call around the table.
			if got := run(uint32(arch.MIPS.ID), 0, 0); got != retKill {
				t.Errorf("foreign arch: %#x, want kill", got)
			}
			if goarch == "amd64" {
				if got := run(archX86_64.ID, 0x40000000|arch.X32.SyscallNames["keyctl"], 0); got != retENOSYS {
					t.Errorf("x32 keyctl: %#x, want ENOSYS", got)
				}
			}
		})
	}
}

// TestSeccompDenyListNames: every name in the deny list is a system call of
// the native table or of its 32-bit companion, so a typo cannot silently
// leave a call open.
func TestSeccompDenyListNames(t *testing.T) {
	arches := filterArches(runtime.GOARCH)
	if arches == nil {
		t.Skipf("no seccomp table for %s", runtime.GOARCH)
	}
	for _, g := range deniedSyscalls {
		for _, name := range g.names {
			found := false
			for _, a := range []*sysArch{archX86_64, archI386, archAARCH64, archARM} {
				if _, ok := a.nr(name); ok {
					found = true
				}
			}
			if !found {
				t.Errorf("%s is in no syscall table", name)
			}
		}
	}
	if _, ok := arches[0].nr("keyctl"); !ok {
		t.Errorf("native table lacks keyctl")
	}
	if b, err := seccompProgram(); err != nil || len(b) == 0 || len(b)%8 != 0 {
		t.Errorf("program: %d bytes, %v", len(b), err)
	}
}

// buildProbe compiles testdata/seccompprobe static for goarch into dir.
func buildProbe(t *testing.T, dir, goarch string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go toolchain not on PATH")
	}
	out := filepath.Join(dir, "seccompprobe-"+goarch)
	cmd := exec.Command(gobin, "build", "-o", out, "./testdata/seccompprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, b)
	}
	return out
}

// refusedCalls is what the probe must see inside a sandbox.
var refusedCalls = map[string]syscall.Errno{
	"add_key": unix.EPERM, "keyctl": unix.EPERM, "request_key": unix.EPERM, "bpf": unix.EPERM,
	"perf_event_open": unix.EPERM, "userfaultfd": unix.EPERM, "io_uring_setup": unix.EPERM,
	"kexec_load": unix.EPERM, "kexec_file_load": unix.EPERM, "init_module": unix.EPERM, "finit_module": unix.EPERM,
	"delete_module": unix.EPERM, "open_by_handle_at": unix.EPERM, "syslog": unix.EPERM,
	"setns": unix.EPERM, "unshare": unix.EPERM, "socket_vsock": unix.EPERM, "clone_newuser": unix.EPERM,
	"clone3": unix.ENOSYS,
	// Allowed calls still work.
	"getpid": 0, "socket_unix": 0,
}

// checkProbe runs the probe in a sandbox over a plain tree and over a staged
// one (through the helper), with a busybox root and the host root.
func checkProbe(t *testing.T, h *Host, probe string) {
	t.Helper()
	specs := map[string]Spec{
		"busybox tree":   {Root: busyboxRoot(t), Tree: t.TempDir()},
		"busybox staged": {Root: busyboxRoot(t), Lower: []string{t.TempDir()}, Upper: t.TempDir()},
		"host tree":      {Root: HostRoot, Tree: t.TempDir()},
	}
	for name, spec := range specs {
		var out bytes.Buffer
		spec.Inputs = map[string]string{"probe": probe}
		spec.Command = []string{InputsPath + "/probe"}
		spec.Stdout, spec.Stderr = &out, &out
		code, err := Run(context.Background(), h, spec)
		if err != nil || code != 0 {
			t.Fatalf("%s: probe: %d %v\n%s", name, code, err, out.String())
		}
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			k, v, _ := strings.Cut(l, " ")
			got[k] = v
		}
		for call, want := range refusedCalls {
			if got[call] == "absent" {
				continue
			}
			if got[call] != strconv.Itoa(int(want)) {
				t.Errorf("%s: %s returned errno %s, want %d (%v)", name, call, got[call], int(want), want)
			}
		}
		if got["seccomp"] != "2" {
			t.Errorf("%s: Seccomp mode %q, want 2 (filter)", name, got["seccomp"])
		}
	}
}

// TestSecurityRow33SeccompRefusesCalls: RELIABILITY row 33, a stage that calls
// keyctl, add_key, bpf, ... gets EPERM, as root and as an unprivileged user.
func TestSecurityRow33SeccompRefusesCalls(t *testing.T) {
	if os.Getenv(childEnv) == "seccomp" {
		hostOnce.Do(func() { testHost, hostErr = Detect(context.Background()) })
		if hostErr != nil || testHost.Root {
			t.Fatalf("unprivileged detect: %v %+v", hostErr, testHost)
		}
		checkProbe(t, testHost, filepath.Join(os.TempDir(), "probe"))
		return
	}
	h := host(t)
	if !h.Seccomp {
		t.Skipf("no seccomp filter for %s", runtime.GOARCH)
	}
	dir := t.TempDir()
	probe := buildProbe(t, dir, runtime.GOARCH)
	t.Run("root", func(t *testing.T) {
		if !h.Root {
			t.Skip("not root")
		}
		checkProbe(t, h, probe)
	})
	t.Run("unprivileged", func(t *testing.T) {
		runAsNobody(t, "TestSecurityRow33SeccompRefusesCalls", "seccomp", map[string]string{"probe": probe})
	})
	if runtime.GOARCH == "amd64" {
		// 32-bit programs use the i386 numbers: the filter has them too.
		t.Run("i386", func(t *testing.T) {
			probe32 := buildProbe(t, dir, "386")
			if err := exec.Command(probe32, "noop").Run(); err != nil {
				t.Skipf("this kernel does not run i386 programs: %v", err)
			}
			checkProbe(t, h, probe32)
		})
	}
}

// TestOwnerWatchFilterDecisions runs the owner watch's program in x/net/bpf's
// VM for every architecture: owner calls to root or "unchanged" pass, others
// notify; the legacy 16-bit calls of i386 and arm read only the low 16 bits,
// where "unchanged" is 0xffff.
func TestOwnerWatchFilterDecisions(t *testing.T) {
	for _, goarch := range []string{"amd64", "arm64", "386", "arm"} {
		t.Run(goarch, func(t *testing.T) {
			ins, err := ownerWatchInstructions(filterArches(goarch))
			if err != nil {
				t.Fatal(err)
			}
			vm, err := bpf.NewVM(ins)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range filterArches(goarch) {
				run := func(name string, uid, gid uint64) (uint32, bool) {
					t.Helper()
					nr, ok := a.nr(name)
					if !ok {
						return 0, false
					}
					c := ownerCallsByName(a)[name]
					b := seccompData(a.ID, nr, 0)
					for arg, v := range map[int]uint64{c.uid: uid, c.gid: gid} {
						binary.BigEndian.PutUint32(b[offArg0+8*arg:], uint32(v))
						binary.BigEndian.PutUint32(b[offArg0+8*arg+4:], uint32(v>>32))
					}
					v, err := vm.Run(b)
					if err != nil {
						t.Fatal(err)
					}
					return uint32(v), true
				}
				for _, name := range []string{"chown", "lchown", "fchown", "fchownat", "chown32", "lchown32", "fchown32"} {
					sixteen := legacy16(a, name)
					minus1 := uint64(0xffffffff)
					if sixteen {
						minus1 = 0xffff
					}
					for _, c := range []struct {
						uid, gid uint64
						want     uint32
					}{
						{0, 0, retAllow},
						{minus1, 0, retAllow},
						{0, minus1, retAllow},
						{minus1, minus1, retAllow},
						{3000, 3000, retUserNotif},
						{0, 2000, retUserNotif},
						{0xffff, 0, map[bool]uint32{true: retAllow, false: retUserNotif}[sixteen]},
						{0x10000, 0, map[bool]uint32{true: retAllow, false: retUserNotif}[sixteen]}, // 16-bit: reads as root
					} {
						got, ok := run(name, c.uid, c.gid)
						if ok && got != c.want {
							t.Errorf("%s %s(%#x, %#x): %#x, want %#x", a.Name, name, c.uid, c.gid, got, c.want)
						}
					}
				}
			}
		})
	}
}

// ownerCallsByName is ownerCalls of a by name, each with its legacy16 flag.
func ownerCallsByName(a *sysArch) map[string]ownerCall {
	out := map[string]ownerCall{}
	for _, c := range ownerCalls {
		out[c.name] = ownerCall{c.name, c.uid, c.gid, legacy16(a, c.name)}
	}
	return out
}

// TestSyscallTables: the generated tables (zsyscalls.go) hold exactly
// go-seccomp-bpf's, so a module update that changed them fails here until
// "go generate ./executor/sandbox" is run.
func TestSyscallTables(t *testing.T) {
	for _, c := range []struct {
		ours *sysArch
		lib  *arch.Info
	}{{archX86_64, arch.X86_64}, {archI386, arch.I386}, {archAARCH64, arch.AARCH64}, {archARM, arch.ARM}} {
		if c.ours.Name != c.lib.Name || c.ours.ID != uint32(c.lib.ID) || len(c.ours.calls) != len(c.lib.SyscallNames) {
			t.Errorf("%s: %s %#x, %d calls; the library has %s %#x, %d calls", c.ours.Name, c.ours.Name, c.ours.ID, len(c.ours.calls), c.lib.Name, uint32(c.lib.ID), len(c.lib.SyscallNames))
			continue
		}
		for name, nr := range c.lib.SyscallNames {
			if got, ok := c.ours.nr(name); !ok || got != nr {
				t.Errorf("%s %s: %d (%v), the library says %d", c.ours.Name, name, got, ok, nr)
			}
		}
	}
}
