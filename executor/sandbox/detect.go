package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Staging modes reported in [Host.Staging].
const (
	// StagingOverlay means Run stages Lower/Upper with overlayfs: O(1) set-up,
	// only changes land in the upper directory, deletions as whiteouts.
	StagingOverlay = "overlay"
	// StagingCopy means overlayfs is unavailable and Run copies every lower
	// directory into the upper one before the stage runs: O(tree) set-up and
	// the upper directory ends up holding the complete tree, not just changes.
	StagingCopy = "copy"
)

// Host is what [Detect] found on this machine. It is plain data with JSON tags:
// it backs `strata doctor` and `strata doctor --output json`.
type Host struct {
	// Bwrap is the bubblewrap binary; its Path is empty when none was found.
	Bwrap Tool `json:"bwrap"`
	// BwrapWorks reports that `bwrap --unshare-all ... true` ran successfully.
	// Only Detect runs it; DetectCached, for builds, leaves it false: there
	// the first sandbox's own bwrap run is the check (see probeBwrap).
	BwrapWorks bool `json:"bwrap_works"`
	// BwrapError says why BwrapWorks is false after Detect.
	BwrapError string `json:"bwrap_error,omitempty"`
	// Root reports that strata runs as real root (effective uid 0).
	Root bool `json:"root"`
	// UserNamespaces reports that this process can create a user namespace.
	UserNamespaces bool `json:"user_namespaces"`
	// Overlay reports that overlayfs could be mounted and written in the
	// helper's namespace (a real probe: copy-up and whiteout were checked).
	Overlay bool `json:"overlay"`
	// OverlayError says why Overlay is false.
	OverlayError string `json:"overlay_error,omitempty"`
	// OverlayXattr is the xattr prefix overlayfs uses in the upper directory for
	// opaque directories and redirects: "trusted.overlay." when strata runs as
	// root, "user.overlay." (mount option userxattr) otherwise.
	OverlayXattr string `json:"overlay_xattr,omitempty"`
	// Staging is StagingOverlay or StagingCopy: how Run stages Lower/Upper.
	Staging string `json:"staging"`
	// ProcessLimit is how a sandbox's process count is capped: "cgroup v2" or
	// "cgroup v1" (pids.max), "RLIMIT_NPROC" (rootless without a delegated
	// pids cgroup: set in the sandbox's user namespace), or "" when nothing
	// does (root without a writable pids cgroup: stages run unlimited).
	ProcessLimit string `json:"process_limit"`
	// MemoryLimit is how a sandbox's memory is capped: "cgroup v2"
	// (memory.max), "cgroup v1" (memory.limit_in_bytes), or "" when no
	// writable memory cgroup exists (only /tmp is bounded).
	MemoryLimit string `json:"memory_limit"`
	// Seccomp reports that stages run under strata's seccomp filter (false on
	// architectures strata has no system call table for).
	Seccomp bool `json:"seccomp"`
	// Executable is the path of this binary, re-executed as the staging helper
	// when there is no companion binary (see UseCompanion).
	Executable string `json:"executable,omitempty"`
	// Binfmt lists the qemu-user binfmt_misc entries, sorted by arch.
	Binfmt []Binfmt `json:"binfmt"`
	// KVM reports that /dev/kvm exists and is a character device.
	KVM bool `json:"kvm"`
	// KVMAccess reports that /dev/kvm can be opened read-write.
	KVMAccess bool `json:"kvm_access"`
	// Tools lists the helper tools strata may call, in a fixed order.
	Tools []Tool `json:"tools"`
	// Fingerprint identifies the host build root for cache keys.
	Fingerprint Fingerprint `json:"fingerprint"`

	// cgroups are where Run makes each sandbox's cgroup: found once by
	// detect, so ProcessLimit and MemoryLimit describe what Run does.
	cgroups     cgroupParents
	cgroupsSeen bool
}

// Tool is one program found (or not) on PATH.
type Tool struct {
	// Name is the program name, e.g. "mksquashfs".
	Name string `json:"name"`
	// Path is the absolute path found on PATH, empty when absent.
	Path string `json:"path,omitempty"`
	// Version is the program's version, when strata knows how to ask for it.
	Version string `json:"version,omitempty"`
}

// Binfmt is one /proc/sys/fs/binfmt_misc/qemu-<arch> entry.
type Binfmt struct {
	// Arch is the qemu architecture name, e.g. "aarch64".
	Arch string `json:"arch"`
	// Enabled reports the entry's first line is "enabled".
	Enabled bool `json:"enabled"`
	// Interpreter is the registered interpreter path.
	Interpreter string `json:"interpreter"`
	// Flags are the entry's flags, e.g. "F" (fix binary: works in a sandbox).
	Flags string `json:"flags,omitempty"`
}

// Fingerprint identifies the host for cache keys of nodes that use the host
// build root: os-release ID and VERSION_ID, and the machine architecture.
type Fingerprint struct {
	ID        string `json:"id"`
	VersionID string `json:"version_id"`
	Arch      string `json:"arch"`
}

// String returns "ID-VERSION_ID-ARCH", e.g. "debian-12-x86_64".
func (f Fingerprint) String() string {
	return f.ID + "-" + f.VersionID + "-" + f.Arch
}

// Tool returns the named entry of h.Tools and whether it has a path.
func (h *Host) Tool(name string) (Tool, bool) {
	for _, t := range h.Tools {
		if t.Name == name {
			return t, t.Path != ""
		}
	}
	return Tool{Name: name}, false
}

// ToolNames are the tools Detect looks up, in report order.
var toolNames = []string{"mksquashfs", "mkfs.ext4", "mkfs.erofs", "mmdebstrap", "zstd", "tar", "git"}

// Detect inspects the host. It returns an error only when the host cannot run
// stages at all (no usable bwrap); everything else is reported in the Host.
// STRATA_STAGING=copy forces copy staging.
// Without root the overlayfs probe re-executes this binary, so [MaybeRunHelper]
// must have been called; otherwise Overlay is false and OverlayError says why.
func Detect(ctx context.Context) (*Host, error) {
	return detect(ctx, nil, true)
}

// probes are the results of the checks that start processes (a user
// namespace, bwrap --version, the overlay probe), which DetectCached keeps.
type probes struct {
	UserNamespaces bool   `json:"user_namespaces"`
	BwrapVersion   string `json:"bwrap_version"`
	Overlay        bool   `json:"overlay"`
	OverlayError   string `json:"overlay_error,omitempty"`
}

// detect inspects the host, with the probes' results from cached when it is
// given. probeRun asks for the bwrap run probe too.
func detect(ctx context.Context, cached *probes, probeRun bool) (*Host, error) {
	h := &Host{Root: os.Geteuid() == 0, Staging: StagingCopy}
	if exe, err := os.Executable(); err == nil {
		h.Executable = exe
	}
	h.Fingerprint = hostFingerprint()
	h.Binfmt = detectBinfmt("/proc/sys/fs/binfmt_misc")
	if fi, err := os.Stat("/dev/kvm"); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		h.KVM = true
		if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
			h.KVMAccess = true
			f.Close()
		}
	}
	for _, name := range toolNames {
		t := Tool{Name: name}
		if p, err := exec.LookPath(name); err == nil {
			t.Path = p
		}
		h.Tools = append(h.Tools, t)
	}
	h.cgroups, h.cgroupsSeen = findCgroupParents(), true
	h.ProcessLimit, h.MemoryLimit = h.cgroups.processLimit(h.Root), h.cgroups.memoryLimit()
	if prog, err := seccompProgram(); err == nil && prog != nil {
		h.Seccomp = true
	}
	if h.Root {
		h.OverlayXattr = "trusted.overlay."
	} else {
		h.OverlayXattr = "user.overlay."
	}
	h.Bwrap.Name = "bwrap"
	p, err := exec.LookPath("bwrap")
	if err != nil {
		return h, fmt.Errorf("sandbox: detect: bubblewrap (bwrap) not found on PATH: %w", err)
	}
	h.Bwrap.Path = p

	if cached != nil {
		h.UserNamespaces, h.Bwrap.Version = cached.UserNamespaces, cached.BwrapVersion
		h.Overlay, h.OverlayError = cached.Overlay, cached.OverlayError
	} else {
		// The probes start processes and touch the disk: run them at once
		// (a cold store pays for them on every build). Without root the
		// overlay probe needs the user namespace probe's answer.
		var wg sync.WaitGroup
		var bwrapErr, overlayErr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			h.UserNamespaces = probeUserns(ctx)
			if !h.Root {
				overlayErr = probeOverlay(ctx, h)
			}
		}()
		go func() {
			defer wg.Done()
			h.Bwrap.Version = bwrapVersion(ctx, p)
		}()
		if probeRun {
			wg.Add(1)
			go func() {
				defer wg.Done()
				bwrapErr = probeBwrap(ctx, p)
			}()
		}
		if h.Root {
			overlayErr = probeOverlay(ctx, h)
		}
		wg.Wait()
		if bwrapErr != nil {
			h.BwrapError = bwrapErr.Error()
			return h, fmt.Errorf("sandbox: detect: %s does not work: %w", p, bwrapErr)
		}
		h.BwrapWorks = probeRun
		if overlayErr != nil {
			h.OverlayError = overlayErr.Error()
		} else {
			h.Overlay = true
		}
	}
	if h.Overlay {
		h.Staging = StagingOverlay
	}
	if os.Getenv(StagingEnv) == StagingCopy {
		h.Staging = StagingCopy
	}
	return h, nil
}

// StagingEnv, set to "copy", makes stages use copy staging even where overlayfs
// works: for filesystems where overlayfs misbehaves, and to test the fallback.
const StagingEnv = "STRATA_STAGING"

func bwrapVersion(ctx context.Context, path string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "bubblewrap"))
}

// probeBwrap runs bwrap as stages do, without strata's options, so that
// `strata doctor` can say whether bwrap works here. Builds skip it (a cold
// store paid ~15 ms for it): a bwrap that cannot set up a sandbox fails the
// first stage with ErrSetup and bwrap's own message, and the runner then
// drops the cached probes.
func probeBwrap(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--unshare-all", "--die-with-parent", "--new-session",
		"--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true")
	cmd.Env = []string{}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// probeUserns starts a trivial child in a new user namespace. As root, that
// child is the holder of the identity user namespace every sandbox joins
// (identityUserns), made once per process whether it is probed or not.
func probeUserns(ctx context.Context) bool {
	if os.Geteuid() == 0 {
		_, err := identityUserns()
		return err == nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	exe, err := exec.LookPath("true")
	if err != nil {
		exe = "/bin/true"
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
	}
	return cmd.Run() == nil
}

// probeOverlay mounts overlayfs exactly as Run would (in a thread's mount
// namespace as root, in a helper child otherwise), and
// checks copy-up, whiteouts and that the lower directory stayed untouched.
func probeOverlay(ctx context.Context, h *Host) error {
	if !h.Root && !helperInstalled.Load() && companion() == "" {
		return fmt.Errorf("overlay probe skipped: the binary did not call sandbox.MaybeRunHelper")
	}
	if !h.Root && !h.UserNamespaces {
		return fmt.Errorf("user namespaces are unavailable")
	}
	// Rootless, overlayfs leaves a mode-000 work/work directory that a plain
	// RemoveAll cannot enter; lockedTempDir's clean-up can.
	dir, cleanup, err := lockedTempDir()
	if err != nil {
		return err
	}
	defer cleanup()
	lower, upper, work, merged := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"),
		filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{lower, filepath.Join(lower, "d"), upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "a"), []byte("a"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(lower, "d", "b"), []byte("b"), 0o644); err != nil {
		return err
	}
	cfg := helperConfig{Lower: []string{lower}, Upper: upper, Work: work, Merged: merged,
		UserXattr: !h.Root, Volatile: !h.Root, Probe: true}
	if h.Root {
		// As Run does it: in a thread's own mount namespace (withOverlay).
		var werr error
		if err := withOverlay(cfg, func() { werr = probeWrites(merged) }); err != nil {
			return fmt.Errorf("overlay probe: %w", err)
		}
		if werr != nil {
			return fmt.Errorf("overlay probe: %w", werr)
		}
	} else {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		cmd, err := helperCommand(h, cfg)
		if err != nil {
			return err
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := runUntil(ctx, cmd); err != nil {
			return fmt.Errorf("overlay probe: %w: %s", err, strings.TrimSpace(out.String()))
		}
	}
	// a deleted → whiteout; c created → in upper; d/b appended → copied up.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper, "a"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		return fmt.Errorf("overlay probe: no whiteout for a deleted file in the upper directory")
	}
	if b, err := os.ReadFile(filepath.Join(upper, "d", "b")); err != nil || string(b) != "bb" {
		return fmt.Errorf("overlay probe: copy-up did not land in the upper directory")
	}
	if b, err := os.ReadFile(filepath.Join(lower, "d", "b")); err != nil || string(b) != "b" {
		return fmt.Errorf("overlay probe: the lower directory was modified")
	}
	if _, err := os.Stat(filepath.Join(lower, "a")); err != nil {
		return fmt.Errorf("overlay probe: the lower directory was modified")
	}
	return nil
}

func hostFingerprint() Fingerprint {
	var f Fingerprint
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		kv := parseOSRelease(b)
		f.ID, f.VersionID = kv["ID"], kv["VERSION_ID"]
		break
	}
	if f.ID == "" {
		f.ID = "linux"
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		f.Arch = unix.ByteSliceToString(u.Machine[:])
	}
	return f
}

func parseOSRelease(b []byte) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		kv[k] = v
	}
	return kv
}

func detectBinfmt(dir string) []Binfmt {
	matches, _ := filepath.Glob(filepath.Join(dir, "qemu-*"))
	out := []Binfmt{}
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		e := Binfmt{Arch: strings.TrimPrefix(filepath.Base(m), "qemu-")}
		for i, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if i == 0 {
				e.Enabled = line == "enabled"
			}
			if v, ok := strings.CutPrefix(line, "interpreter "); ok {
				e.Interpreter = v
			}
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				e.Flags = strings.TrimSpace(v)
			}
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Arch < out[j].Arch })
	return out
}

// runUntil runs cmd and kills it when ctx is done.
func runUntil(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return ctx.Err()
	}
}
