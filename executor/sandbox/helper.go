package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// helperArg0 is the argv[0] the staging helper is started with. A process whose
// argv[0] is this and whose argv has exactly two elements is a helper.
const helperArg0 = "strata-sandbox-helper"

// helperInstalled records that MaybeRunHelper ran in this process, so the
// binary can be re-executed as the helper without running main's normal path.
var helperInstalled atomic.Bool

// helperConfig is what the parent passes to the helper, as JSON in argv[1].
type helperConfig struct {
	// Lower are the read-only lower directories, uppermost first.
	Lower []string `json:"lower"`
	// Upper and Work are the overlay upper and work directories (same fs).
	Upper string `json:"upper"`
	Work  string `json:"work"`
	// Merged is an existing empty directory to mount the overlay on.
	Merged string `json:"merged"`
	// UserXattr adds the userxattr mount option (unprivileged overlay).
	UserXattr bool `json:"userxattr"`
	// Volatile mounts the overlay volatile where the kernel can (see
	// mountOverlay).
	Volatile bool `json:"volatile,omitempty"`
	// Probe makes the helper run the Detect probe instead of exec'ing bwrap.
	Probe bool `json:"probe,omitempty"`
	// Argv is the bwrap command line to exec after mounting (argv[0] = path).
	Argv []string `json:"argv,omitempty"`
	// InputsDir, when set, is an existing empty directory on which the
	// namespace gets a tmpfs holding a bind of each of Inputs (see
	// bindInputs); bwrap then binds it once.
	InputsDir string      `json:"inputs_dir,omitempty"`
	Inputs    []inputBind `json:"inputs,omitempty"`
	// OwnerWatch, when not 0, is the descriptor of a unix socket: the helper
	// installs the owner watch (see Spec.WatchOwners) and sends its
	// notification descriptor there before it execs bwrap.
	OwnerWatch int `json:"owner_watch,omitempty"`
}

// MaybeRunHelper must be called first thing in main (and in TestMain) of any
// binary that uses copy-on-write staging. When the process was started as the
// staging helper it mounts the overlay, execs bwrap and never returns (it exits
// with status 125 on a helper error). Otherwise it returns at once and records
// that the binary may be re-executed as the helper.
func MaybeRunHelper() {
	helperInstalled.Store(true)
	if len(os.Args) != 2 || os.Args[0] != helperArg0 {
		return
	}
	if err := runHelper(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "strata sandbox helper: %v\n", err)
		os.Exit(125)
	}
	os.Exit(0)
}

func runHelper(arg string) error {
	// The parent-death signal, no_new_privs and the owner watch's seccomp
	// filter belong to the calling thread, and execve keeps only the state of
	// the thread that calls it: without the lock the scheduler may move this
	// goroutine between them and exec bwrap from a thread that has none
	// (under load, a chown the owner watch never saw).
	runtime.LockOSThread()
	var cfg helperConfig
	if err := json.Unmarshal([]byte(arg), &cfg); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	// Die with the parent even if it is killed with SIGKILL; this survives exec.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent-death signal: %w", err)
	}
	if os.Getppid() == 1 {
		return fmt.Errorf("parent already exited")
	}
	// Keep our mounts from propagating back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if cfg.Merged != "" {
		if err := mountOverlay(cfg); err != nil {
			return err
		}
	}
	if err := bindInputs(cfg); err != nil {
		return err
	}
	if cfg.Probe {
		return probeWrites(cfg.Merged)
	}
	if len(cfg.Argv) == 0 {
		return fmt.Errorf("no command")
	}
	if cfg.OwnerWatch != 0 {
		fd, err := installOwnerWatch()
		if err != nil {
			return err
		}
		if err := sendFD(cfg.OwnerWatch, fd); err != nil {
			return fmt.Errorf("send owner watch: %w", err)
		}
		unix.Close(fd)
		unix.Close(cfg.OwnerWatch)
	}
	// fd 0-2 and the bwrap status fd (3) are inherited; Go opened everything
	// else close-on-exec.
	if err := unix.Exec(cfg.Argv[0], cfg.Argv, []string{}); err != nil {
		return fmt.Errorf("exec %s: %w", cfg.Argv[0], err)
	}
	return nil
}

func probeWrites(merged string) error {
	if err := os.Remove(filepath.Join(merged, "a")); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(merged, "d", "b"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString("b"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// noVolatile records that the kernel refused overlayfs' volatile option
// (before Linux 5.10).
var noVolatile atomic.Bool

// mountOverlay mounts cfg's overlay on cfg.Merged, volatile when cfg asks and
// the kernel has the option. The upper directory is scratch space the store
// reads and syncs itself when it commits the stage, so a volatile overlay need
// not sync the whole upper filesystem when it goes away (which the helper's
// overlay does when bwrap exits, before Run returns), nor honour a stage's
// fsync calls; but it makes and leaves two more directories in the work
// directory (work/incompat/volatile), about 2 ms a stage on a disk mounted
// with discard. As root the overlay goes away off the stage's path (see
// withOverlay), so Run asks for it only with the helper.
func mountOverlay(cfg helperConfig) error {
	opts, err := overlayOptions(cfg)
	if err != nil {
		return err
	}
	if cfg.Volatile && !noVolatile.Load() {
		err := unix.Mount("overlay", cfg.Merged, "overlay", 0, opts+",volatile")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("mount overlay on %s: %w", cfg.Merged, err)
		}
		// An older kernel, or a bad option another way: try without.
		if err := unix.Mount("overlay", cfg.Merged, "overlay", 0, opts); err != nil {
			return fmt.Errorf("mount overlay on %s: %w", cfg.Merged, err)
		}
		noVolatile.Store(true)
		return nil
	}
	if err := unix.Mount("overlay", cfg.Merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", cfg.Merged, err)
	}
	return nil
}

// inputBind is one input of a stage: the host file or directory Source seen
// as Name.
type inputBind struct {
	Name   string `json:"name"`
	Source string `json:"source"`
}

// prebindInputs is how many inputs a stage needs before they are bound in
// the sandbox's mount namespace and handed to bwrap as one directory: bwrap
// reads the whole mount table again for each bind it makes, so a hundred
// --ro-bind arguments cost it 19 ms; a hundred bind mounts made here cost
// one.
const prebindInputs = 8

// bindInputs mounts a tmpfs on cfg.InputsDir and binds each input there
// under its name, in the mount namespace of the caller (the helper's, or a
// worker thread's as root), which nothing else sees. They are writable here;
// bwrap's --ro-bind of the directory makes it and every bind under it
// read-only in the sandbox.
func bindInputs(cfg helperConfig) error {
	if cfg.InputsDir == "" {
		return nil
	}
	if err := unix.Mount("tmpfs", cfg.InputsDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("mount inputs tmpfs on %s: %w", cfg.InputsDir, err)
	}
	for _, in := range cfg.Inputs {
		target := filepath.Join(cfg.InputsDir, in.Name)
		// A link is made a link, resolved in the sandbox (see inputLink).
		link, err := inputLink(in.Source)
		if err != nil {
			return fmt.Errorf("input %s: %w", in.Name, err)
		}
		if link != "" {
			if err := unix.Symlink(link, target); err != nil {
				return fmt.Errorf("input %s: %w", in.Name, err)
			}
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(in.Source, &st); err != nil {
			return fmt.Errorf("input %s: %w", in.Name, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = unix.Mkdir(target, 0o755)
		} else {
			var fd int
			if fd, err = unix.Open(target, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644); err == nil {
				unix.Close(fd)
			}
		}
		if err != nil {
			return fmt.Errorf("input %s: mount point: %w", in.Name, err)
		}
		if err := unix.Mount(in.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("input %s: bind %s: %w", in.Name, in.Source, err)
		}
	}
	return nil
}

// overlayOptions builds the overlay mount data. lowerdir lists the uppermost
// layer first, as overlayfs does.
func overlayOptions(cfg helperConfig) (string, error) {
	if len(cfg.Lower) == 0 {
		return "", fmt.Errorf("overlay needs at least one lower directory")
	}
	for _, p := range append(append([]string{}, cfg.Lower...), cfg.Upper, cfg.Work) {
		if strings.ContainsAny(p, ",:\\") {
			return "", fmt.Errorf("overlay path %q contains ',', ':' or '\\'", p)
		}
	}
	opts := "lowerdir=" + strings.Join(cfg.Lower, ":") + ",upperdir=" + cfg.Upper + ",workdir=" + cfg.Work
	if cfg.UserXattr {
		opts += ",userxattr"
	}
	if len(opts) >= os.Getpagesize() {
		return "", fmt.Errorf("overlay mount options are %d bytes, over the %d-byte limit: use fewer or shorter lower paths", len(opts), os.Getpagesize())
	}
	return opts, nil
}

// helperCommand returns the command that starts the helper (the companion
// binary when there is one, else this binary re-executed): a new mount
// namespace, plus a user namespace mapping uid/gid 0 to the caller's when not
// running as real root. As real root no user namespace is created, so
// overlayfs can use trusted.* xattrs and files of every owner can be copied up.
func helperCommand(h *Host, cfg helperConfig) (*exec.Cmd, error) {
	exe := companion()
	if exe == "" {
		if !helperInstalled.Load() {
			return nil, fmt.Errorf("sandbox: copy-on-write staging needs sandbox.MaybeRunHelper to be called in main")
		}
		if exe = h.Executable; exe == "" {
			var err error
			if exe, err = os.Executable(); err != nil {
				return nil, fmt.Errorf("sandbox: find own executable: %w", err)
			}
		}
	}
	arg, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Args = []string{helperArg0, string(arg)}
	cmd.Env = []string{}
	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS,
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
	if os.Geteuid() != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	cmd.SysProcAttr = attr
	return cmd, nil
}
