package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"
)

// childEnv selects a test-child mode when the test binary re-executes itself.
const childEnv = "STRATA_SANDBOX_TEST_CHILD"

func TestMain(m *testing.M) {
	MaybeRunHelper()
	// In-sandbox probes: the test binary is bound at BinaryPath and run as
	// `strata sandbox-probe <what> [args]`.
	if len(os.Args) >= 3 && os.Args[1] == "sandbox-probe" {
		os.Exit(probe(os.Args[2], os.Args[3:]))
	}
	if os.Getenv(childEnv) == "mainthread" {
		os.Exit(serveMainThread(m))
	}
	os.Exit(m.Run())
}

// probe runs inside the sandbox.
func probe(what string, args []string) int {
	switch what {
	case "connect":
		c, err := net.DialTimeout("tcp", args[0], 3*time.Second)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		c.Close()
		fmt.Println("connected")
		return 0
	case "session":
		sid, _ := unix.Getsid(0)
		fmt.Printf("sid=%d\n", sid)
		if fd, err := unix.Open("/dev/tty", unix.O_RDWR, 0); err != nil {
			fmt.Printf("devtty=%v\n", err)
		} else {
			fmt.Println("devtty=open")
			unix.Close(fd)
		}
		for _, fd := range []int{0, 1, 2} {
			c := byte('x')
			_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCSTI, uintptr(unsafe.Pointer(&c)))
			fmt.Printf("tiocsti%d=%v\n", fd, errno)
		}
		return 0
	}
	fmt.Println("unknown probe", what)
	return 2
}

var (
	hostOnce sync.Once
	testHost *Host
	hostErr  error
)

// host detects the host once; tests skip when bwrap is missing.
func host(t testing.TB) *Host {
	t.Helper()
	hostOnce.Do(func() { testHost, hostErr = Detect(context.Background()) })
	if testHost == nil || testHost.Bwrap.Path == "" {
		t.Skipf("bubblewrap (bwrap) is not installed: %v", hostErr)
	}
	if hostErr != nil {
		t.Fatalf("Detect: %v", hostErr)
	}
	return testHost
}

var busyboxApplets = []string{"sh", "cat", "echo", "env", "head", "ls", "mkdir", "mount", "rm", "sleep", "test", "touch", "true", "yes", "id", "stat", "wc"}

// busyboxRoot builds a tiny build root: bin/busybox plus applet symlinks.
func busyboxRoot(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("/bin/busybox is not installed")
	}
	root := t.TempDir()
	bin := filepath.Join(root, "bin")
	must(t, os.Mkdir(bin, 0o755))
	b, err := os.ReadFile("/bin/busybox")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(bin, "busybox"), b, 0o755))
	for _, a := range busyboxApplets {
		must(t, os.Symlink("busybox", filepath.Join(bin, a)))
	}
	must(t, os.Symlink("bin", filepath.Join(root, "sbin")))
	return root
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// roots are the two kinds of build root every contract test runs against.
func roots(t *testing.T) map[string]string {
	return map[string]string{"busybox": busyboxRoot(t), "host": HostRoot}
}

// sh runs a shell script in the sandbox and returns exit code and output.
func sh(t *testing.T, spec Spec, script string) (int, string) {
	t.Helper()
	spec.Command = []string{"sh", "-c", script}
	var out bytes.Buffer
	spec.Stdout, spec.Stderr = &out, &out
	code, err := Run(context.Background(), host(t), spec)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	return code, out.String()
}

func TestDetect(t *testing.T) {
	h := host(t)
	if !h.BwrapWorks || h.Bwrap.Version == "" {
		t.Errorf("bwrap not usable: %+v", h.Bwrap)
	}
	if h.Fingerprint.ID == "" || h.Fingerprint.Arch == "" {
		t.Errorf("empty fingerprint %+v", h.Fingerprint)
	}
	if h.Staging != StagingOverlay {
		t.Logf("overlay staging unavailable: %s", h.OverlayError)
	}
	b, err := json.Marshal(h)
	must(t, err)
	var back Host
	must(t, json.Unmarshal(b, &back))
	if d := cmp.Diff(*h, back, cmpopts.IgnoreUnexported(Host{})); d != "" { // the JSON fields
		t.Errorf("JSON round trip (-want +got):\n%s", d)
	}
	t.Logf("%s", b)
}

func TestDetectBinfmt(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "qemu-aarch64"), []byte("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c46\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "qemu-arm"), []byte("disabled\ninterpreter /usr/bin/qemu-arm-static\nflags: F\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "status"), []byte("enabled\n"), 0o644))
	want := []Binfmt{
		{Arch: "aarch64", Enabled: true, Interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P", Flags: "PF"},
		{Arch: "arm", Enabled: false, Interpreter: "/usr/bin/qemu-arm-static", Flags: "F"},
	}
	if d := cmp.Diff(want, detectBinfmt(dir)); d != "" {
		t.Errorf("binfmt (-want +got):\n%s", d)
	}
}

// TestTreeInputsOptions: the stage writes into the tree and reads its inputs
// and options at the documented paths.
func TestTreeInputsOptions(t *testing.T) {
	for name, root := range roots(t) {
		t.Run(name, func(t *testing.T) {
			tree, in := t.TempDir(), t.TempDir()
			must(t, os.WriteFile(filepath.Join(in, "x"), []byte("input-x\n"), 0o644))
			file := filepath.Join(t.TempDir(), "f")
			must(t, os.WriteFile(file, []byte("input-f\n"), 0o644))
			spec := Spec{Root: root, Tree: tree, Inputs: map[string]string{"dir": in, "file": file},
				Options: []byte(`{"a":1}` + "\n")}
			code, out := sh(t, spec, `set -e; cd /run/strata/tree; pwd; echo hi > out; mkdir -p d; echo deep > d/e
cat /run/strata/options.json /run/strata/inputs/dir/x /run/strata/inputs/file`)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, out)
			}
			if want := "/run/strata/tree\n{\"a\":1}\ninput-x\ninput-f\n"; out != want {
				t.Errorf("output %q, want %q", out, want)
			}
			for p, want := range map[string]string{"out": "hi\n", "d/e": "deep\n"} {
				b, err := os.ReadFile(filepath.Join(tree, p))
				if err != nil || string(b) != want {
					t.Errorf("tree/%s = %q, %v; want %q", p, b, err, want)
				}
			}
		})
	}
}

// TestReadOnly: the stage cannot write its build root, its inputs, its
// options, /run, or remount anything read-write (no capabilities).
func TestReadOnly(t *testing.T) {
	for name, root := range roots(t) {
		t.Run(name, func(t *testing.T) {
			in := t.TempDir()
			spec := Spec{Root: root, Tree: t.TempDir(), Inputs: map[string]string{"in": in}}
			for _, script := range []string{
				"touch /bin/pwned", "touch /pwned", "mkdir /newdir", "touch /run/pwned",
				"touch /run/strata/inputs/in/pwned", "touch /run/strata/pwned",
				"echo x > /run/strata/options.json", "rm /bin/sh",
				"mount -o remount,rw /", "mount -o remount,rw,bind /bin",
				"mount -t tmpfs none /run/strata/tree",
			} {
				if code, out := sh(t, spec, script); code == 0 {
					t.Errorf("%q succeeded: %s", script, out)
				}
			}
			if ents, _ := os.ReadDir(in); len(ents) != 0 {
				t.Errorf("input modified: %v", ents)
			}
			if root != HostRoot {
				if _, err := os.Lstat(filepath.Join(root, "pwned")); err == nil {
					t.Error("build root modified")
				}
			}
			if code, out := sh(t, spec, "touch /tmp/ok && id -u"); code != 0 || out != "0\n" {
				t.Errorf("/tmp not writable or uid not 0: %d %q", code, out)
			}
		})
	}
}

// TestNetwork: a loopback listener of the host is unreachable unless Network.
func TestNetwork(t *testing.T) {
	h := host(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	exe, err := os.Executable()
	must(t, err)
	for _, network := range []bool{false, true} {
		var out bytes.Buffer
		spec := Spec{Root: HostRoot, Tree: t.TempDir(), Binary: exe, Network: network,
			Command: []string{BinaryPath, "sandbox-probe", "connect", ln.Addr().String()}, Stdout: &out, Stderr: &out}
		code, err := Run(context.Background(), h, spec)
		must(t, err)
		if network && (code != 0 || !strings.Contains(out.String(), "connected")) {
			t.Errorf("Network=true: exit %d: %s", code, out.String())
		}
		if !network && (code == 0 || !strings.Contains(out.String(), "connection refused")) {
			t.Errorf("Network=false: exit %d: %s", code, out.String())
		}
	}
	// Busybox root, no network: only an isolated loopback.
	if code, out := sh(t, Spec{Root: busyboxRoot(t), Tree: t.TempDir()}, "ls /sys/class/net 2>&1; cat /proc/net/dev | wc -l"); code != 0 || !strings.HasSuffix(out, "3\n") {
		t.Errorf("network devices visible: %d %q", code, out)
	}
}

// TestNoHostFiles: nothing outside the binds is reachable, /proc/1/root is
// the sandbox's own root, and /root does not exist.
func TestNoHostFiles(t *testing.T) {
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret")
	must(t, os.WriteFile(secret, []byte("s3cr3t"), 0o644))
	for name, root := range roots(t) {
		t.Run(name, func(t *testing.T) {
			spec := Spec{Root: root, Tree: t.TempDir()}
			for _, script := range []string{
				"cat " + secret, "ls /root", "cat /proc/1/root" + secret, "ls /proc/1/root/root",
				"ls /sys/kernel", "cat /etc/shadow", "ls /home", "ls /var", "test -e /run/systemd",
				"ls " + os.TempDir() + "/" + filepath.Base(filepath.Dir(secretDir)),
			} {
				if code, out := sh(t, spec, script); code == 0 {
					t.Errorf("%q succeeded: %s", script, out)
				}
			}
			_, slash := sh(t, spec, "ls -a /")
			_, pid1 := sh(t, spec, "ls -a /proc/1/root/")
			if slash != pid1 {
				t.Errorf("/proc/1/root differs from /:\n%s\nvs\n%s", pid1, slash)
			}
			// The sandbox's pid namespace holds only bwrap's init and the stage.
			if _, out := sh(t, spec, "ls -d /proc/[0-9]* | wc -l"); strings.TrimSpace(out) != "3" && strings.TrimSpace(out) != "4" {
				t.Errorf("unexpected processes visible: %s", out)
			}
		})
	}
}

// TestEnvironment: the environment is exactly the documented one, whatever
// secrets the parent holds.
func TestEnvironment(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
	t.Setenv("REGISTRY_PASSWORD", "registry-secret")
	for name, root := range roots(t) {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			spec := Spec{Root: root, Tree: t.TempDir(), Env: map[string]string{"LANG": "C.UTF-8"},
				SourceDateEpoch: 1700000000, Command: []string{"env"}, Stdout: &out}
			code, err := Run(context.Background(), host(t), spec)
			if err != nil || code != 0 {
				t.Fatalf("Run: %d %v", code, err)
			}
			got := strings.Split(strings.TrimSpace(out.String()), "\n")
			sort.Strings(got)
			want := []string{"HOME=/tmp", "LANG=C.UTF-8", "PATH=" + DefaultPath, "PWD=" + TreePath, "SOURCE_DATE_EPOCH=1700000000"}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("environment (-want +got):\n%s", d)
			}
		})
	}
}

// TestNewSession: the stage runs in its own session, has no controlling
// terminal even when strata has one, and TIOCSTI fails on every fd it holds.
func TestNewSession(t *testing.T) {
	if os.Getenv(childEnv) == "session" {
		sessionChild(t)
		return
	}
	h := host(t)
	// Run the check in a child that has a controlling pty, like a user's shell.
	ptmx, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer unix.Close(ptmx)
	must(t, unix.IoctlSetPointerInt(ptmx, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(ptmx, unix.TIOCGPTN)
	must(t, err)
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	must(t, err)
	defer pts.Close()
	_ = h
	cmd := exec.Command(os.Args[0], "-test.run=^TestNewSession$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=session")
	cmd.Stdin = pts
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Run()
	pts.Close()
	// Anything the stage injected would be readable on the master side.
	unix.SetNonblock(ptmx, true)
	buf := make([]byte, 64)
	injected, _ := unix.Read(ptmx, buf)
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	if injected > 0 {
		t.Errorf("terminal received %q", buf[:injected])
	}
	t.Log(out.String())
}

func sessionChild(t *testing.T) {
	if fd, err := unix.Open("/dev/tty", unix.O_RDWR, 0); err != nil {
		t.Fatalf("child has no controlling terminal: %v", err)
	} else {
		unix.Close(fd)
	}
	mysid, _ := unix.Getsid(0)
	exe, _ := os.Executable()
	var out bytes.Buffer
	spec := Spec{Root: HostRoot, Tree: t.TempDir(), Binary: exe,
		Command: []string{BinaryPath, "sandbox-probe", "session"}, Stdout: &out, Stderr: &out}
	code, err := Run(context.Background(), host(t), spec)
	if err != nil || code != 0 {
		t.Fatalf("probe: %d %v: %s", code, err, out.String())
	}
	s := out.String()
	if strings.Contains(s, fmt.Sprintf("sid=%d\n", mysid)) {
		t.Errorf("stage shares strata's session %d: %s", mysid, s)
	}
	if !strings.Contains(s, "devtty=no such device or address") {
		t.Errorf("stage could open /dev/tty: %s", s)
	}
	for _, fd := range []string{"0", "1", "2"} {
		if strings.Contains(s, "tiocsti"+fd+"=errno 0") {
			t.Errorf("TIOCSTI on fd %s succeeded: %s", fd, s)
		}
	}
	t.Log(s)
}

// overlayFixture makes a lower dir: a, d/b, e/f, keep.
func overlayFixture(t testing.TB, lower string) {
	must(t, os.MkdirAll(filepath.Join(lower, "d"), 0o755))
	must(t, os.MkdirAll(filepath.Join(lower, "e"), 0o755))
	for p, c := range map[string]string{"a": "a\n", "d/b": "b\n", "e/f": "f\n", "keep": "keep\n"} {
		must(t, os.WriteFile(filepath.Join(lower, p), []byte(c), 0o644))
	}
}

// checkStaging runs a stage that edits, deletes and replaces over a two-layer
// lower and checks the lowers are untouched and the upper holds the changes.
func checkStaging(t testing.TB, h *Host, root string) {
	base, top, upper := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "upper")
	must(t, os.Mkdir(upper, 0o755))
	overlayFixture(t, base)
	must(t, os.WriteFile(filepath.Join(top, "keep"), []byte("top\n"), 0o644))
	var out bytes.Buffer
	spec := Spec{Root: root, Lower: []string{top, base}, Upper: upper, Stdout: &out, Stderr: &out,
		Command: []string{"sh", "-c", `set -e; cd /run/strata/tree; cat keep; echo A >> a; rm d/b; rm -r e; mkdir e; echo g > e/g; echo n > n`}}
	code, err := Run(context.Background(), h, spec)
	if err != nil || code != 0 {
		t.Fatalf("stage: %d %v: %s", code, err, out.String())
	}
	if out.String() != "top\n" {
		t.Errorf("Lower[0] must hide Lower[1]: read %q", out.String())
	}
	// Lowers unchanged.
	for p, c := range map[string]string{"a": "a\n", "d/b": "b\n", "e/f": "f\n", "keep": "keep\n"} {
		if b, err := os.ReadFile(filepath.Join(base, p)); err != nil || string(b) != c {
			t.Errorf("lower %s changed: %q %v", p, b, err)
		}
	}
	for p, c := range map[string]string{"a": "a\nA\n", "n": "n\n", "e/g": "g\n"} {
		if b, err := os.ReadFile(filepath.Join(upper, p)); err != nil || string(b) != c {
			t.Errorf("upper %s = %q %v, want %q", p, b, err, c)
		}
	}
	if h.Staging == StagingCopy {
		for _, p := range []string{"d/b", "e/f"} {
			if _, err := os.Lstat(filepath.Join(upper, p)); err == nil {
				t.Errorf("copy staging: deleted %s still in upper", p)
			}
		}
		return
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper, "d", "b"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("no whiteout for d/b in upper: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(upper, "keep")); err == nil {
		t.Error("unchanged file copied up")
	}
	if _, err := os.Lstat(filepath.Join(upper, "e", "f")); err == nil {
		t.Error("e/f in upper of the replaced directory")
	}
	opaque := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(upper, "e"), h.OverlayXattr+"opaque", opaque); err != nil || string(opaque[:n]) != "y" {
		t.Errorf("replaced directory e not opaque (%sopaque): %v", h.OverlayXattr, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(upper)); len(ents) != 1 {
		t.Errorf("work directory left next to upper: %v", ents)
	}
}

func TestStagingOverlay(t *testing.T) {
	h := host(t)
	if h.Staging != StagingOverlay {
		t.Skipf("overlay unavailable: %s", h.OverlayError)
	}
	for name, root := range roots(t) {
		t.Run(name, func(t *testing.T) { checkStaging(t, h, root) })
	}
}

func TestStagingCopy(t *testing.T) {
	h := *host(t)
	h.Staging = StagingCopy
	checkStaging(t, &h, busyboxRoot(t))
}

// TestStagingUnprivileged re-runs the overlay check as an unprivileged user
// (nobody), where the helper needs a user namespace and userxattr.
func TestStagingUnprivileged(t *testing.T) {
	if os.Getenv(childEnv) == "unprivileged" {
		hostOnce.Do(func() { testHost, hostErr = Detect(context.Background()) })
		if hostErr != nil || testHost.Root || testHost.Staging != StagingOverlay || testHost.OverlayXattr != "user.overlay." {
			t.Fatalf("unprivileged detect: %v %+v", hostErr, testHost)
		}
		// The overlay probe cleans up after itself, mode-000 work directory included.
		if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "strata-*")); len(left) > 0 {
			t.Errorf("detection left %v", left)
		}
		checkStaging(t, testHost, busyboxRoot(t))
		// The helper's overlay goes away when bwrap exits, before Run
		// returns: volatile, it does not sync the upper filesystem then.
		upper := filepath.Join(t.TempDir(), "upper")
		must(t, os.Mkdir(upper, 0o755))
		_, out := sh(t, Spec{Root: busyboxRoot(t), Lower: []string{t.TempDir()}, Upper: upper}, "cat /proc/self/mountinfo")
		if line := mountLine([]byte(out), TreePath); kernelAtLeast(5, 10) && !strings.Contains(line, "volatile") {
			t.Errorf("the helper's overlay is not volatile: %q", line)
		}
		return
	}
	host(t)
	runAsNobody(t, "TestStagingUnprivileged", "unprivileged", nil)
}

// TestOwnerWatchUnprivileged: without root, a command's chown to an owner the
// sandbox cannot set is answered EPERM and reported, even when the command
// ignores the failure; chowns to root or "unchanged" pass. The filter is the
// helper's thread's, so it is checked many times: a helper that execs bwrap
// from another thread than the one that installed it loses it now and then.
func TestOwnerWatchUnprivileged(t *testing.T) {
	if os.Getenv(childEnv) != "ownerwatch" {
		host(t)
		runAsNobody(t, "TestOwnerWatchUnprivileged", "ownerwatch", nil)
		return
	}
	h, err := Detect(context.Background())
	if err != nil || h.Root {
		t.Fatalf("unprivileged detect: %v %+v", err, h)
	}
	for i := range 30 {
		tree := t.TempDir()
		must(t, os.WriteFile(filepath.Join(tree, "x"), []byte("x"), 0o644))
		var out bytes.Buffer
		spec := Spec{Root: busyboxRoot(t), Tree: tree, WatchOwners: true, Stdout: &out, Stderr: &out,
			Command: []string{"sh", "-c", "chown 0:0 " + TreePath + "/x && chown :0 " + TreePath + "/x && echo fine; chown 3000:3000 " + TreePath + "/x; echo $?"}}
		code, err := Run(context.Background(), h, spec)
		var oc *OwnerChangeError
		if !errors.As(err, &oc) || !errors.Is(err, ErrOwnerChange) {
			t.Fatalf("run %d: exit %d, err %v, want an OwnerChangeError\n%s", i, code, err, out.String())
		}
		if len(oc.Calls) != 1 || !strings.Contains(oc.Calls[0], "3000:3000") || !strings.HasPrefix(out.String(), "fine\n") {
			t.Fatalf("run %d: calls %q, output %q", i, oc.Calls, out.String())
		}
	}
}

// runAsNobody re-runs the test named run as the unprivileged user nobody, with
// childEnv=mode and env, and fails unless it passes. The child's TMPDIR is a
// world-writable directory of the parent's that also holds a copy of the test
// binary; files lists more files to copy there (world-readable), and the
// child finds them under $TMPDIR. It returns the child's output.
func runAsNobody(t *testing.T, run, mode string, files map[string]string, env ...string) string {
	return runAsNobodyIn(t, nil, run, mode, files, env...)
}

// runAsNobodyIn is runAsNobody with the child started inside the cgroups whose
// cgroup.procs files join lists.
func runAsNobodyIn(t *testing.T, join []string, run, mode string, files map[string]string, env ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to an unprivileged user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv not installed")
	}
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o777))
	copyExe := func(src, name string) string {
		b, err := os.ReadFile(src)
		must(t, err)
		dst := filepath.Join(dir, name)
		must(t, os.WriteFile(dst, b, 0o755))
		return dst
	}
	exe := copyExe(os.Args[0], "sandbox.test")
	for name, src := range files {
		copyExe(src, name)
	}
	for d := filepath.Dir(dir); d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			must(t, os.Chmod(d, fi.Mode().Perm()|0o011))
		}
	}
	argv := []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--", exe, "-test.run=^" + run + "$", "-test.v"}
	if len(join) > 0 {
		script := ""
		for i := range join {
			script += fmt.Sprintf(`echo $$ > "$%d" && `, i+1)
		}
		script += fmt.Sprintf(`shift %d && exec "$@"`, len(join))
		argv = append(append([]string{"/bin/sh", "-c", script, "sh"}, join...), argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append([]string{childEnv + "=" + mode, "TMPDIR=" + dir, "PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("unprivileged child: %v\n%s", err, out)
	}
	return string(out)
}

// TestChroot: a chrooted stage sees the tree as /, and the mount points bwrap
// needs (dev, proc, run, tmp) end up in the tree only where it had them.
func TestChroot(t *testing.T) {
	h := host(t)
	tree := busyboxRoot(t)
	code, out := sh(t, Spec{Chroot: true, Tree: tree}, "echo x > /made; ls /run/strata; cat /run/strata/options.json")
	if code != 0 || out != "inputs\noptions.json\n{}" {
		t.Errorf("chroot: %d %q", code, out)
	}
	if b, err := os.ReadFile(filepath.Join(tree, "made")); err != nil || string(b) != "x\n" {
		t.Errorf("tree/made = %q %v", b, err)
	}
	ents, _ := os.ReadDir(tree)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if d := cmp.Diff([]string{"bin", "made", "sbin"}, names); d != "" {
		t.Errorf("tree after a chrooted stage (-want +got):\n%s", d)
	}
	// Staged, with a lower that has /tmp (kept) but none of the others.
	lower, upper := busyboxRoot(t), t.TempDir()
	must(t, os.Mkdir(filepath.Join(lower, "tmp"), 0o1777))
	var buf bytes.Buffer
	spec := Spec{Chroot: true, Lower: []string{lower}, Upper: upper, Stdout: &buf, Stderr: &buf,
		Command: []string{"sh", "-c", "echo y > /made; test -d /proc/self && test -c /dev/null"}}
	if code, err := Run(context.Background(), h, spec); err != nil || code != 0 {
		t.Fatalf("staged chroot: %d %v\n%s", code, err, buf.String())
	}
	ents, _ = os.ReadDir(upper)
	names = nil
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if d := cmp.Diff([]string{"made"}, names); d != "" {
		t.Errorf("upper after a staged chrooted stage (-want +got):\n%s", d)
	}
}

// TestOutputComplete: RELIABILITY row 27, the osbuild monitor race.
func TestOutputComplete(t *testing.T) {
	h, root := host(t), busyboxRoot(t)
	const size = 1 << 20
	for i := 0; i < 50; i++ {
		var stdout, stderr bytes.Buffer
		spec := Spec{Root: root, Tree: t.TempDir(), Stdout: &stdout, Stderr: &stderr,
			Command: []string{"sh", "-c", "head -c 1048576 /dev/zero; echo done >&2"}}
		code, err := Run(context.Background(), h, spec)
		if err != nil || code != 0 || stdout.Len() != size || stderr.String() != "done\n" {
			t.Fatalf("run %d: exit %d err %v: stdout %d bytes, stderr %q", i, code, err, stdout.Len(), stderr.String())
		}
	}
}

func TestExitCode(t *testing.T) {
	root := busyboxRoot(t)
	for _, c := range []struct {
		script string
		want   int
	}{{"exit 0", 0}, {"exit 3", 3}, {"kill -9 $$", 137}} {
		if code, out := sh(t, Spec{Root: root, Tree: t.TempDir()}, c.script); code != c.want {
			t.Errorf("%q: exit %d, want %d: %s", c.script, code, c.want, out)
		}
	}
}

func TestSetupError(t *testing.T) {
	spec := Spec{Root: busyboxRoot(t), Tree: t.TempDir(), Command: []string{"true"},
		Inputs: map[string]string{"x": "/nonexistent/input"}}
	var stderr bytes.Buffer
	spec.Stderr = &stderr
	_, err := Run(context.Background(), host(t), spec)
	if !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "/nonexistent/input") {
		t.Errorf("err = %v, want ErrSetup naming the input", err)
	}
	spec.Inputs = nil
	spec.Command = []string{"/no/such/program"}
	if _, err := Run(context.Background(), host(t), spec); !errors.Is(err, ErrSetup) {
		t.Errorf("missing program: err = %v, want ErrSetup", err)
	}
	for _, bad := range []Spec{
		{Tree: "/x", Command: []string{"true"}},
		{Root: HostRoot, Command: []string{"true"}},
		{Root: HostRoot, Tree: "/x", Upper: "/y", Lower: []string{"/z"}, Command: []string{"true"}},
		{Root: HostRoot, Tree: "/x"},
		{Root: HostRoot, Tree: "/x", Command: []string{"true"}, Inputs: map[string]string{"../a": "/a"}},
	} {
		if _, err := Run(context.Background(), host(t), bad); err == nil {
			t.Errorf("invalid spec %+v accepted", bad)
		}
	}
}

// uniqueMarker is a sleep duration in seconds that names one test's processes
// in /proc and no other test run's on the machine.
func uniqueMarker(test, i int) string { return fmt.Sprintf("%d%d%d", test, i, os.Getpid()) }

// sleepMarker is what the fork-storm tests sleep for.
var sleepMarker = uniqueMarker(3000, 0)

// processesWith lists the processes whose command line contains marker.
func processesWith(marker string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(b, []byte(marker)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitGone(t *testing.T, marker string) {
	t.Helper()
	// A bound on liveness, not a speed check: the processes are gone well
	// before it on any machine.
	deadline := time.Now().Add(time.Minute)
	for len(processesWith(marker)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("orphans left: %v", processesWith(marker))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sleeping reports whether a `sleep <marker>` process exists.
func sleeping(marker string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.HasSuffix(b, []byte("sleep\x00"+marker+"\x00")) && !bytes.Contains(b, []byte("bwrap")) {
			return true
		}
	}
	return false
}

// TestCancel: ctx cancel kills a sleeping stage and nothing is left behind;
// with a plain tree and through the staging helper, once the stage runs and
// while bwrap is still setting up.
func TestCancel(t *testing.T) {
	h, root := host(t), busyboxRoot(t)
	for i, c := range []struct {
		staged, early bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		marker := uniqueMarker(9876, i)
		spec := Spec{Root: root, Command: []string{"sh", "-c", "sleep " + marker + "; sleep " + marker}, KillGrace: 500 * time.Millisecond}
		if c.staged {
			spec.Lower, spec.Upper = []string{t.TempDir()}, t.TempDir()
		} else {
			spec.Tree = t.TempDir()
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			if c.early {
				time.Sleep(time.Duration(i) * time.Millisecond)
			} else {
				for !sleeping(marker) {
					time.Sleep(10 * time.Millisecond)
				}
			}
			cancel()
		}()
		_, err := Run(ctx, h, spec)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%+v: err = %v, want context.Canceled", c, err)
		}
		waitGone(t, marker)
	}
}

// TestParentKilled: RELIABILITY row 18, strata dies (SIGKILL) while a stage
// runs: no orphan survives it, and the next run removes the temporary
// directory and the cgroups the killed process left. The children work in
// this test's temporary directory, so nothing is left in /tmp either.
func TestParentKilled(t *testing.T) {
	switch m := os.Getenv(childEnv); {
	case strings.HasPrefix(m, "killed:"):
		spec := Spec{Root: busyboxRoot(t), Command: []string{"sleep", strings.TrimPrefix(m, "killed:")}}
		if os.Getenv("STAGED") == "1" {
			spec.Lower, spec.Upper = []string{t.TempDir()}, t.TempDir()
		} else {
			spec.Tree = t.TempDir()
		}
		Run(context.Background(), host(t), spec)
		return
	case m == "next":
		if code, out := sh(t, Spec{Root: busyboxRoot(t), Tree: t.TempDir()}, "true"); code != 0 {
			t.Fatalf("next run: %d %s", code, out)
		}
		return
	}
	host(t)
	tmp := t.TempDir()
	for _, staged := range []string{"0", "1"} {
		marker := uniqueMarker(8765, int(staged[0]-'0'))
		cmd := exec.Command(os.Args[0], "-test.run=^TestParentKilled$")
		cmd.Env = append(os.Environ(), childEnv+"=killed:"+marker, "STAGED="+staged, "TMPDIR="+tmp)
		must(t, cmd.Start())
		for deadline := time.Now().Add(time.Minute); !sleeping(marker); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("stage never started")
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
		waitGone(t, marker)
		leftovers := func() []string {
			m, _ := filepath.Glob(filepath.Join(tmp, fmt.Sprintf("%s%d-*", runDirPrefix, cmd.Process.Pid)))
			p := findCgroupParents()
			for _, parent := range []string{p.v2, p.v1Pids, p.v1Memory} {
				if parent != "" {
					c, _ := filepath.Glob(filepath.Join(parent, fmt.Sprintf("strata-%d-*", cmd.Process.Pid)))
					m = append(m, c...)
				}
			}
			return m
		}
		if len(leftovers()) == 0 {
			// Without a cgroup a run leaves nothing a sweep must find.
			t.Logf("staged=%s: the killed run left nothing to sweep", staged)
			continue
		}
		next := exec.Command(os.Args[0], "-test.run=^TestParentKilled$")
		next.Env = append(os.Environ(), childEnv+"=next", "TMPDIR="+tmp)
		if out, err := next.CombinedOutput(); err != nil {
			t.Fatalf("next run: %v\n%s", err, out)
		}
		if left := leftovers(); len(left) > 0 {
			t.Errorf("staged=%s: the next run did not sweep %v", staged, left)
		}
	}
}

// TestSecurityRow34Timeout: RELIABILITY row 34, a stage that blocks is killed
// after its timeout and Run says so.
func TestSecurityRow34Timeout(t *testing.T) {
	h, root := host(t), busyboxRoot(t)
	for i, staged := range []bool{false, true} {
		marker := uniqueMarker(7654, i)
		spec := Spec{Root: root, Timeout: 2 * time.Second, Command: []string{"sh", "-c", "echo started; sleep " + marker}}
		if staged {
			spec.Lower, spec.Upper = []string{t.TempDir()}, t.TempDir()
		} else {
			spec.Tree = t.TempDir()
		}
		code, err := Run(context.Background(), h, spec)
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "timed out after 2s") || code != -1 {
			t.Errorf("staged=%v: Run = %d, %v; want ErrTimeout after 2s", staged, code, err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("staged=%v: a timeout must not look like the caller's deadline: %v", staged, err)
		}
		waitGone(t, marker)
	}
}

// TestOutputLimit: RELIABILITY row 20, endless output ends in a limit error.
func TestOutputLimit(t *testing.T) {
	var out bytes.Buffer
	spec := Spec{Root: busyboxRoot(t), Tree: t.TempDir(), Command: []string{"yes"}, MaxOutput: 1 << 20, Stdout: &out}
	start := time.Now()
	_, err := Run(context.Background(), host(t), spec)
	if !errors.Is(err, ErrOutputLimit) {
		t.Fatalf("err = %v, want ErrOutputLimit", err)
	}
	if out.Len() != 1<<20 {
		t.Errorf("delivered %d bytes, want exactly the cap", out.Len())
	}
	t.Logf("stopped after %v: %v", time.Since(start), err)
}

// TestTmpSize: a full /tmp is a clear failure of the stage, not of the host.
func TestTmpSize(t *testing.T) {
	code, out := sh(t, Spec{Root: busyboxRoot(t), Tree: t.TempDir(), TmpSize: 1 << 20}, "head -c 2000000 /dev/zero > /tmp/big; r=$?; stat -c %s /tmp/big; exit $r")
	if code == 0 || !strings.HasSuffix(out, "\n1048576\n") {
		t.Errorf("filling a 1 MiB /tmp: exit %d %q", code, out)
	}
}

func BenchmarkTrueStage(b *testing.B) {
	h := host(b)
	root, tree := busyboxRoot(b), b.TempDir()
	for b.Loop() {
		if code, err := Run(context.Background(), h, Spec{Root: root, Tree: tree, Command: []string{"true"}}); err != nil || code != 0 {
			b.Fatal(code, err)
		}
	}
}

func BenchmarkTrueStageHostRoot(b *testing.B) {
	h := host(b)
	tree := b.TempDir()
	for b.Loop() {
		if code, err := Run(context.Background(), h, Spec{Root: HostRoot, Tree: tree, Command: []string{"true"}}); err != nil || code != 0 {
			b.Fatal(code, err)
		}
	}
}

func BenchmarkBareBwrap(b *testing.B) {
	h := host(b)
	for b.Loop() {
		cmd := exec.Command(h.Bwrap.Path, "--unshare-all", "--ro-bind", "/", "/", "true")
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchStaging measures a staged `true` over a lower dir of n files.
func benchStaging(b *testing.B, n int) {
	h := host(b)
	if h.Staging != StagingOverlay {
		b.Skip("overlay unavailable")
	}
	root, lower := busyboxRoot(b), b.TempDir()
	for i := 0; i < n; i++ {
		d := filepath.Join(lower, fmt.Sprintf("d%03d", i/1000))
		if i%1000 == 0 {
			must(b, os.Mkdir(d, 0o755))
		}
		must(b, os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), nil, 0o644))
	}
	b.ResetTimer()
	for b.Loop() {
		upper := filepath.Join(b.TempDir(), "upper")
		must(b, os.Mkdir(upper, 0o755))
		if code, err := Run(context.Background(), h, Spec{Root: root, Lower: []string{lower}, Upper: upper,
			Command: []string{"touch", "/run/strata/tree/new"}, Stdout: io.Discard}); err != nil || code != 0 {
			b.Fatal(code, err)
		}
	}
}

func BenchmarkStaging10(b *testing.B)   { benchStaging(b, 10) }
func BenchmarkStaging100k(b *testing.B) { benchStaging(b, 100000) }

// BenchmarkSandboxOverhead runs a `true` stage and bare bwrap alternately, so
// that both see the same machine load, and reports their ratio (the goal of
// issue 8: ≤ 1.5). The stage is staged copy-on-write over a lower tree, as a
// build stages every stage; only Run is timed, not making its upper directory.
func BenchmarkSandboxOverhead(b *testing.B) {
	h := host(b)
	root, lower, dir := busyboxRoot(b), b.TempDir(), b.TempDir()
	must(b, os.WriteFile(filepath.Join(lower, "file"), []byte("lower\n"), 0o644))
	var stage, bare time.Duration
	i := 0
	for b.Loop() {
		i++
		upper := filepath.Join(dir, strconv.Itoa(i))
		must(b, os.Mkdir(upper, 0o755))
		start := time.Now()
		if code, err := Run(context.Background(), h, Spec{Root: root, Lower: []string{lower}, Upper: upper, Command: []string{"true"}}); err != nil || code != 0 {
			b.Fatal(code, err)
		}
		mid := time.Now()
		if err := exec.Command(h.Bwrap.Path, "--unshare-all", "--ro-bind", "/", "/", "true").Run(); err != nil {
			b.Fatal(err)
		}
		stage, bare = stage+mid.Sub(start), bare+time.Since(mid)
	}
	if h.Staging != StagingOverlay {
		b.Logf("staging: %s", h.Staging)
	}
	b.ReportMetric(float64(stage.Microseconds())/float64(b.N)/1000, "stage-ms/op")
	b.ReportMetric(float64(bare.Microseconds())/float64(b.N)/1000, "bwrap-ms/op")
	b.ReportMetric(float64(stage)/float64(bare), "ratio")
}

// kernelAtLeast reports whether the running kernel is major.minor or later.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var a, b int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &a, &b)
	return a > major || a == major && b >= minor
}

// checkManyInputs runs an overlay stage with more inputs than prebindInputs,
// which reach bwrap as one directory of binds: each is readable at its name,
// none is writable, and nothing is left next to the upper directory.
func checkManyInputs(t testing.TB, h *Host) {
	inputs := map[string]string{}
	for i := range prebindInputs + 4 {
		name := fmt.Sprintf("in%02d", i)
		d := t.TempDir()
		must(t, os.WriteFile(filepath.Join(d, "x"), []byte(name+"\n"), 0o644))
		inputs[name] = d
	}
	file := filepath.Join(t.TempDir(), "f")
	must(t, os.WriteFile(file, []byte("single\n"), 0o644))
	inputs["file"] = file
	upper := filepath.Join(t.TempDir(), "upper")
	must(t, os.Mkdir(upper, 0o755))
	var out bytes.Buffer
	spec := Spec{Root: busyboxRoot(t), Lower: []string{t.TempDir()}, Upper: upper, Inputs: inputs, Stdout: &out, Stderr: &out,
		Command: []string{"sh", "-c", `cd /run/strata/inputs || exit 1
cat in00/x in11/x file
for try in "touch in03/pwned" "touch pwned" "rm in00/x" "echo x > file" "mkdir in05/d" "mount -o remount,rw in01"; do
	sh -c "$try" 2>/dev/null && echo "WROTE: $try"
done
mkdir /run/strata/tree/all && cp in*/x file /run/strata/tree/all/ 2>&1; ls | wc -l`}}
	code, err := Run(context.Background(), h, spec)
	if err != nil || code != 0 {
		t.Fatalf("stage: %d %v: %s", code, err, out.String())
	}
	if want := "in00\nin11\nsingle\n" + strconv.Itoa(len(inputs)) + "\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	for name, src := range inputs {
		if name == "file" {
			continue
		}
		if ents, _ := os.ReadDir(src); len(ents) != 1 {
			t.Errorf("input %s modified: %v", name, ents)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "single\n" {
		t.Errorf("file input modified: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "all", "file")); err != nil || string(b) != "single\n" {
		t.Errorf("upper/all/file = %q %v", b, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(upper)); len(ents) != 1 {
		t.Errorf("left next to upper: %v", ents)
	}
}

func TestManyInputs(t *testing.T) {
	if os.Getenv(childEnv) == "manyinputs" {
		h, err := Detect(context.Background())
		if err != nil || h.Root || h.Staging != StagingOverlay {
			t.Fatalf("unprivileged detect: %v %+v", err, h)
		}
		checkManyInputs(t, h)
		return
	}
	h := host(t)
	if h.Staging != StagingOverlay {
		t.Skipf("overlay unavailable: %s", h.OverlayError)
	}
	checkManyInputs(t, h)
	t.Run("unprivileged", func(t *testing.T) { runAsNobody(t, "TestManyInputs", "manyinputs", nil) })
}

// TestSecurityInputLinkResolvedInSandbox: an input that is a symbolic link (a
// path source naming one, lnk -> /etc/shadow) is a link in the sandbox,
// resolved there; a bind mount followed it on the host and put the host's
// file, or directory, in the image. Both ways inputs reach bwrap are tried:
// one bind each, and one directory of binds (prebindInputs or more).
func TestSecurityInputLinkResolvedInSandbox(t *testing.T) {
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret")
	must(t, os.WriteFile(secret, []byte("HOST SECRET\n"), 0o600))
	links := t.TempDir()
	fileLink, dirLink := filepath.Join(links, "f"), filepath.Join(links, "d")
	must(t, os.Symlink(secret, fileLink))
	must(t, os.Symlink(secretDir, dirLink))
	for _, many := range []bool{false, true} {
		t.Run(fmt.Sprintf("prebind=%v", many), func(t *testing.T) {
			inputs := map[string]string{"f": fileLink, "d": dirLink}
			for i := 0; many && len(inputs) < prebindInputs+1; i++ {
				inputs[fmt.Sprintf("pad%02d", i)] = t.TempDir()
			}
			upper := filepath.Join(t.TempDir(), "upper")
			must(t, os.Mkdir(upper, 0o755))
			spec := Spec{Root: busyboxRoot(t), Lower: []string{t.TempDir()}, Upper: upper, Inputs: inputs}
			code, out := sh(t, spec, `cd /run/strata/inputs || exit 1
readlink f; readlink d; cat f d/secret 2>/dev/null; exit 0`)
			if code != 0 || strings.Contains(out, "HOST SECRET") {
				t.Fatalf("exit %d, the host's file reached the sandbox through a link input:\n%s", code, out)
			}
			if want := secret + "\n" + secretDir + "\n"; out != want {
				t.Errorf("output %q, want the links' targets %q", out, want)
			}
		})
	}
}

// TestSecurityHostRootNoTLSKeys: the host build root shows the host's CA
// certificates, not its TLS private keys (/etc/ssl/private): root's
// capabilities in the sandbox's user namespace passed its permission check.
func TestSecurityHostRootNoTLSKeys(t *testing.T) {
	if _, err := os.Stat("/etc/ssl/private"); err != nil {
		t.Skip("no /etc/ssl/private here")
	}
	spec := Spec{Root: HostRoot, Tree: t.TempDir()}
	code, out := sh(t, spec, `ls /etc/ssl/private 2>&1 && echo LISTED; ls /etc/ssl/certs | head -1 | grep -q . && echo CERTS`)
	if code != 0 || strings.Contains(out, "LISTED") || !strings.Contains(out, "CERTS") {
		t.Errorf("exit %d: %s", code, out)
	}
}
