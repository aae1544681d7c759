package sandbox

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// HostRoot is the special [Spec.Root] value that builds / from the host: its
// /usr, /bin, /sbin, /lib, /lib64, /lib32 and /libx32 (those that exist; the
// usr-merge symlinks are mirrored as symlinks), and from /etc only
// ld.so.cache, alternatives, passwd, group, nsswitch.conf, ssl and
// ca-certificates, all read-only, as osbuild does.
const HostRoot = "@host"

// Paths inside the sandbox.
const (
	// TreePath is where the target tree is bound read-write.
	TreePath = "/run/strata/tree"
	// InputsPath is the directory holding one read-only bind per input.
	InputsPath = "/run/strata/inputs"
	// OutputsPath is the directory holding one read-only bind per output
	// (Spec.Outputs), for hooks.
	OutputsPath = "/run/strata/outputs"
	// OptionsPath is the read-only stage options file.
	OptionsPath = "/run/strata/options.json"
	// BinaryPath is where [Spec.Binary] is bound read-only.
	BinaryPath = "/run/strata/bin/strata"
)

// Default environment of a stage; see [Spec.Env].
const (
	DefaultPath = "/usr/sbin:/usr/bin:/sbin:/bin"
	DefaultHome = "/tmp"
)

// DefaultKillGrace is how long Run waits after SIGTERM before SIGKILL.
const DefaultKillGrace = 2 * time.Second

// DefaultTimeout is how long a sandbox may run when [Spec.Timeout] is 0.
const DefaultTimeout = time.Hour

// DefaultMaxMemory returns the memory limit of a sandbox when [Spec.MaxMemory]
// is 0: half of the machine's RAM, so one stage cannot push the host into its
// OOM killer.
func DefaultMaxMemory() int64 { return totalRAM() / 2 }

// MaxDefaultTmpSize caps DefaultTmpSize.
const MaxDefaultTmpSize = 4 << 30

// DefaultTmpSize returns the size of the /tmp tmpfs when [Spec.TmpSize] is 0:
// a quarter of the machine's RAM, at most MaxDefaultTmpSize (the kernel's own
// default, half the RAM, is too much where there is no memory cgroup).
func DefaultTmpSize() int64 { return min(totalRAM()/4, MaxDefaultTmpSize) }

func totalRAM() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return 4 << 30 // what a small build machine has
	}
	return int64(si.Totalram) * int64(si.Unit)
}

var (
	// ErrOutputLimit is returned (wrapped) when a stage writes more than
	// [Spec.MaxOutput] bytes; the stage is killed.
	ErrOutputLimit = errors.New("sandbox: output limit exceeded")
	// ErrSetup is returned (wrapped, with bwrap's or the helper's message) when
	// the sandbox could not be set up and the command never started.
	ErrSetup = errors.New("sandbox: setup failed before the command started")
	// ErrTimeout is returned (wrapped, "timed out after 30m0s") when the
	// sandbox ran longer than [Spec.Timeout]; the stage is killed.
	ErrTimeout = errors.New("timed out")
)

// Spec describes one sandboxed process. The zero value of every optional field
// is a safe default.
type Spec struct {
	// Root is the build root: an absolute directory whose top-level entries are
	// bound read-only at / (its proc, dev, tmp, run and sys entries are
	// replaced by the sandbox's own, so the root needs no mount points), or
	// HostRoot. Ignored when Chroot is set. Required otherwise.
	Root string

	// Tree is the stage's target tree, an absolute directory bound read-write
	// at TreePath. Set either Tree, or Lower and Upper.
	Tree string
	// Lower are read-only directories (store checkouts) layered into the tree
	// by copy-on-write, UPPERMOST FIRST as in overlayfs' lowerdir option: a
	// file in Lower[0] hides the same path in Lower[1]. They are never
	// modified. Requires Upper.
	Lower []string
	// Upper is an existing empty directory strata keeps afterwards: with
	// overlay staging it receives exactly the stage's changes (deletions as
	// 0/0 character-device whiteouts, replaced directories marked opaque with
	// the xattr prefix in Host.OverlayXattr); with copy staging it receives
	// the complete tree. A sibling work directory is created next to it (same
	// filesystem) and removed afterwards.
	Upper string

	// Inputs maps an input name (one path element) to a host file or
	// directory bound read-only at InputsPath/<name>.
	Inputs map[string]string
	// Outputs maps an output name (one path element) to a host file or
	// directory bound read-only at OutputsPath/<name>; hooks see the image's
	// outputs there. Empty binds nothing and creates no OutputsPath.
	Outputs map[string]string
	// Options is written to OptionsPath, read-only. Nil writes "{}".
	Options []byte
	// Binary is the path of a static strata binary bound read-only at
	// BinaryPath, for built-in stages. Empty binds nothing.
	Binary string
	// WatchOwners, without root, refuses and reports a command's attempts to
	// give a file an owner the sandbox cannot set: Run answers them EPERM and
	// returns an error wrapping ErrOwnerChange (see ownerwatch.go). As root it
	// does nothing: the sandbox maps every id.
	WatchOwners bool
	// Binds are further host paths bound below /run/strata (a built-in
	// stage's journal and the manifests of its trees).
	Binds []Bind

	// Command is the program and arguments to run; required. The working
	// directory is TreePath, or / with Chroot.
	Command []string
	// Env is added to the cleared environment. The stage sees exactly
	// PATH=DefaultPath, HOME=DefaultHome (the empty /tmp, so tools that write
	// to $HOME never touch the root or the tree), SOURCE_DATE_EPOCH, PWD (set
	// by bwrap to the working directory) and these entries; an entry here
	// overrides a default of the same name.
	Env map[string]string
	// SourceDateEpoch is the SOURCE_DATE_EPOCH value; default 0.
	SourceDateEpoch int64

	// Network shares the host network namespace and binds /etc/resolv.conf
	// (when the root has one to mount over). Default false: no network at
	// all, only an isolated loopback.
	Network bool
	// Chroot runs the command with the tree as / (read-write) instead of the
	// build root, to run the tree's own binaries. /proc, /dev, /tmp and /run
	// are mounted over the tree's directories of those names (created empty
	// when missing); TreePath is not bound in this mode.
	Chroot bool

	// Stdout and Stderr receive the process output; nil discards it. When both
	// are the same writer the streams share one pipe and keep their relative
	// order. Run returns only after all output was delivered.
	Stdout, Stderr io.Writer
	// MaxOutput caps stdout plus stderr in bytes; 0 means no cap. Beyond it
	// the process is killed and Run returns ErrOutputLimit; the first
	// MaxOutput bytes are delivered.
	MaxOutput int64
	// TmpSize caps the /tmp tmpfs in bytes; 0 means DefaultTmpSize(). Files in
	// /tmp also count against MaxMemory where a memory cgroup exists.
	TmpSize int64
	// MaxMemory caps the memory of all the sandbox's processes together, in
	// bytes (a memory cgroup, swap included, where the host offers one: see
	// [Host.MemoryLimit]); 0 means DefaultMaxMemory(). When the kernel kills a
	// process for it, Run returns ErrMemoryLimit.
	MaxMemory int64
	// Timeout bounds the sandbox's run time, set-up included; 0 means
	// DefaultTimeout. Beyond it the sandbox is killed as on cancellation and
	// Run returns ErrTimeout.
	Timeout time.Duration
	// MaxProcs caps the processes the sandbox may run at once (a pids cgroup,
	// or rootless RLIMIT_NPROC in the sandbox's user namespace: see
	// [Host.ProcessLimit]); 0 means DefaultMaxProcs.
	MaxProcs int
	// KillGrace is the time between SIGTERM and SIGKILL on cancellation;
	// 0 means DefaultKillGrace.
	KillGrace time.Duration
}

// Bind is a host path bound into the sandbox.
type Bind struct {
	// Source is an absolute host path; Target a path below /run/strata/
	// other than the sandbox's own (TreePath, InputsPath, ...).
	Source, Target string
	// Writable binds read-write; the default is read-only.
	Writable bool
}

func (s *Spec) validate() error {
	if len(s.Command) == 0 || s.Command[0] == "" {
		return errors.New("sandbox: spec: empty command")
	}
	if !s.Chroot {
		if s.Root == "" {
			return errors.New("sandbox: spec: no build root")
		}
		if s.Root != HostRoot && !filepath.IsAbs(s.Root) {
			return fmt.Errorf("sandbox: spec: build root %q is not absolute", s.Root)
		}
	}
	switch {
	case s.Tree != "" && (len(s.Lower) > 0 || s.Upper != ""):
		return errors.New("sandbox: spec: set either Tree or Lower+Upper, not both")
	case s.Tree == "" && (len(s.Lower) == 0 || s.Upper == ""):
		return errors.New("sandbox: spec: no tree: set Tree, or Lower and Upper")
	}
	paths := append([]string{s.Tree, s.Upper, s.Binary}, s.Lower...)
	for _, p := range paths {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("sandbox: spec: path %q is not absolute", p)
		}
	}
	for name, src := range s.Inputs {
		if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
			return fmt.Errorf("sandbox: spec: bad input name %q", name)
		}
		if !filepath.IsAbs(src) {
			return fmt.Errorf("sandbox: spec: input %q: path %q is not absolute", name, src)
		}
	}
	for name, src := range s.Outputs {
		if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
			return fmt.Errorf("sandbox: spec: bad output name %q", name)
		}
		if !filepath.IsAbs(src) {
			return fmt.Errorf("sandbox: spec: output %q: path %q is not absolute", name, src)
		}
	}
	for _, b := range s.Binds {
		t := filepath.Clean(b.Target)
		if !filepath.IsAbs(b.Source) || !strings.HasPrefix(t, "/run/strata/") || t != b.Target ||
			t == TreePath || t == OptionsPath || strings.HasPrefix(t+"/", InputsPath+"/") ||
			strings.HasPrefix(t+"/", OutputsPath+"/") || strings.HasPrefix(t+"/", "/run/strata/bin/") {
			return fmt.Errorf("sandbox: spec: bind %q at %q: the target must be a free path below /run/strata/", b.Source, b.Target)
		}
	}
	if s.MaxOutput < 0 || s.TmpSize < 0 || s.KillGrace < 0 || s.MaxProcs < 0 || s.MaxMemory < 0 || s.Timeout < 0 {
		return errors.New("sandbox: spec: negative limit")
	}
	return nil
}
