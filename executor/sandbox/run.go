package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// drainTimeout bounds how long Run waits for the output pipes to reach EOF
// after the process exited. The pid namespace dies with bwrap, so every writer
// is gone by then; this only guards against a leaked descriptor.
const drainTimeout = 10 * time.Second

// Run executes spec in a bubblewrap sandbox as detected in host and returns
// the command's exit code. A non-zero exit of the command is not an error: err
// is nil and exitCode is the command's status (128+n when killed by signal n),
// as bwrap reports it on its --json-status-fd.
// err is non-nil when the sandbox could not be set up (ErrSetup), a limit was
// hit (ErrOutputLimit, ErrProcessLimit, ErrMemoryLimit, ErrTimeout), or ctx
// was cancelled (ctx.Err()); exitCode is then -1. All output is delivered to
// spec.Stdout/Stderr before Run returns.
//
// On cancellation or timeout the process group is sent SIGTERM, then SIGKILL
// after spec.KillGrace; bwrap's --die-with-parent and its pid namespace take
// every process of the stage with it.
func Run(ctx context.Context, host *Host, spec Spec) (exitCode int, err error) {
	if host == nil || host.Bwrap.Path == "" {
		return -1, errors.New("sandbox: run: no bubblewrap detected")
	}
	if err := spec.validate(); err != nil {
		return -1, err
	}
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("sandbox: run %s: %w", spec.Command[0], err)
	}
	timeout := spec.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrTimeout)
	defer cancel()

	tree := spec.Tree
	overlay := tree == "" && host.Staging == StagingOverlay
	var cfg helperConfig
	switch {
	case overlay:
		// The work directory sits next to the upper one (the same filesystem,
		// the caller's to clean up), so a run makes nothing in /tmp that a
		// killed strata could leave behind. The overlay is mounted in a mount
		// namespace of the sandbox's own only (a thread's as root, see
		// withOverlay; the helper's otherwise), so it can be mounted over the
		// uppermost lower directory itself: nobody else sees it there, and no
		// mount point needs to be made and removed (a directory removal costs
		// about a millisecond on a disk mounted with discard).
		work, err := os.MkdirTemp(filepath.Dir(spec.Upper), ".strata-work-")
		if err != nil {
			return -1, fmt.Errorf("sandbox: run: overlay work dir: %w", err)
		}
		defer removeAllForce(work)
		tree = spec.Lower[0]
		cfg = helperConfig{Lower: spec.Lower, Upper: spec.Upper, Work: work, Merged: tree, UserXattr: !host.Root, Volatile: !host.Root}
		if len(spec.Inputs) >= prebindInputs {
			// The overlay's private namespace can hold the inputs' binds too.
			if cfg.InputsDir, err = os.MkdirTemp(filepath.Dir(spec.Upper), ".strata-inputs-"); err != nil {
				return -1, fmt.Errorf("sandbox: run: inputs dir: %w", err)
			}
			defer removeAllForce(cfg.InputsDir)
			for _, name := range slices.Sorted(maps.Keys(spec.Inputs)) {
				cfg.Inputs = append(cfg.Inputs, inputBind{Name: name, Source: spec.Inputs[name]})
			}
		}
	case tree == "":
		// Copy staging: lowest layer first, so upper layers overwrite.
		for i := len(spec.Lower) - 1; i >= 0; i-- {
			if err := copyTree(spec.Lower[i], spec.Upper); err != nil {
				return -1, fmt.Errorf("sandbox: run: copy staging %s: %w", spec.Lower[i], err)
			}
		}
		tree = spec.Upper
	}
	if spec.Chroot {
		made := missingMountPoints(&spec)
		defer func() {
			if rmErr := removeMountPoints(&spec, made); rmErr != nil && err == nil {
				exitCode, err = -1, rmErr
			}
		}()
	}

	// Descriptors for bwrap after its status fd (3), in ExtraFiles order.
	fds := bwrapFDs{status: 3}
	var extra []*os.File
	addFD := func(f *os.File) int {
		extra = append(extra, f)
		return 3 + len(extra)
	}
	data := spec.Options
	if data == nil {
		data = []byte("{}")
	}
	opts, err := memfile("strata-options", data)
	if err != nil {
		return -1, fmt.Errorf("sandbox: run: options: %w", err)
	}
	defer opts.Close()
	fds.options = addFD(opts)
	if host.Root && host.UserNamespaces {
		ns, err := identityUserns()
		if err != nil {
			return -1, fmt.Errorf("%w: %v", ErrSetup, err)
		}
		fds.userns = addFD(ns)
	}
	prog, err := seccompProgram()
	if err != nil {
		return -1, err
	}
	if prog != nil {
		f, err := memfile("strata-seccomp", prog)
		if err != nil {
			return -1, fmt.Errorf("sandbox: run: seccomp: %w", err)
		}
		defer f.Close()
		fds.seccomp = addFD(f)
	}
	maxProcs := spec.MaxProcs
	if maxProcs == 0 {
		maxProcs = DefaultMaxProcs
	}
	maxMemory := spec.MaxMemory
	if maxMemory == 0 {
		maxMemory = DefaultMaxMemory()
	}
	parents := host.cgroups
	if !host.cgroupsSeen { // a Host made by hand, not by Detect
		parents = findCgroupParents()
	}
	cg, err := newCgroup(parents, maxProcs, maxMemory)
	if err != nil {
		return -1, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	defer cg.remove()
	// cgroup v1 cannot start a process inside a cgroup, and RLIMIT_NPROC must
	// be set inside the sandbox's user namespace: either way bwrap holds the
	// sandbox back until Run has done it.
	var g *gate
	if cg.needsJoin() || (!host.Root && !cg.limitsProcs()) {
		if g, err = newGate(); err != nil {
			return -1, err
		}
		defer g.close()
		if cg.needsJoin() {
			g.cgroups = cg.procs()
		}
		if !host.Root && !cg.limitsProcs() {
			g.nproc = maxProcs
		}
		fds.block = addFD(g.r)
	}

	args, err := bwrapArgs(&spec, tree, cfg.InputsDir, fds, host.Root)
	if err != nil {
		return -1, err
	}
	// Without root the overlay needs a user namespace, which only a new
	// process can make: the helper.
	useHelper := overlay && !host.Root
	var watch *ownerWatch
	if spec.WatchOwners && !host.Root {
		// Only the helper, started before bwrap, can hold the filter's
		// notification descriptor: use it even without an overlay.
		w, helperEnd, err := newOwnerWatch()
		if err != nil {
			return -1, err
		}
		watch = w
		defer helperEnd.Close()
		cfg.OwnerWatch = addFD(helperEnd)
		useHelper = true
	}
	var cmd *exec.Cmd
	if useHelper {
		cfg.Argv = append([]string{host.Bwrap.Path}, args...)
		if cmd, err = helperCommand(host, cfg); err != nil {
			return -1, err
		}
	} else {
		cmd = exec.Command(host.Bwrap.Path, args...)
		cmd.Env = []string{}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	cg.prepare(cmd.SysProcAttr)
	var onChild func(pid, parent int) error
	if g != nil {
		onChild = g.open
	}
	var code int
	if overlay && !useHelper {
		if mountErr := withOverlay(cfg, func() {
			code, err = run(ctx, cmd, &spec, timeout, extra, onChild)
		}); mountErr != nil {
			return -1, fmt.Errorf("sandbox: run %s: %w: %v", spec.Command[0], ErrSetup, mountErr)
		}
	} else {
		code, err = run(ctx, cmd, &spec, timeout, extra, onChild)
	}
	if watch != nil {
		if werr := watch.close(); werr != nil && err == nil {
			return -1, werr
		}
	}
	switch {
	case cg.oomKilled():
		return -1, fmt.Errorf("sandbox: run %s: %w: the stage needed more than %s of memory and was killed", spec.Command[0], ErrMemoryLimit, formatBytes(maxMemory))
	case cg.hitProcessLimit():
		return -1, fmt.Errorf("sandbox: run %s: %w: the stage tried to run more than %d processes", spec.Command[0], ErrProcessLimit, maxProcs)
	}
	return code, err
}

// memfile returns a memory file holding b, positioned at its start, for bwrap
// to read (--ro-bind-data, --seccomp): no temporary file, no size limit.
func memfile(name string, b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// gate holds the sandbox's first process on bwrap's --block-fd until Run has
// moved it into its cgroups (v1) and set its RLIMIT_NPROC (rootless without a
// pids cgroup: see [Host.ProcessLimit]). Every process of the stage descends
// from it, so none runs outside the limits.
//
// RLIMIT_NPROC counts the processes of a user, but since Linux 5.14 the count
// is kept per user namespace: a process of the sandbox is charged to its uid
// in the sandbox's user namespace, checked against its own RLIMIT_NPROC, and
// to the real uid outside, checked only against the limit the namespace's
// creator (bwrap) had when it made the namespace. So the limit is set on the
// sandbox's first process, inside the namespace, and the user's other
// processes on the host neither count nor are limited. (Set on bwrap before it
// starts, it would count every process the user runs on the host, and fail at
// once for a user with many.) Real root is exempt from RLIMIT_NPROC and relies
// on the cgroup.
type gate struct {
	r, w    *os.File
	cgroups []string // cgroup.procs files to move the process into
	nproc   int      // RLIMIT_NPROC to set; 0 for none
}

func newGate() (*gate, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: run: %w", err)
	}
	return &gate{r: r, w: w}, nil
}

// open limits the sandbox's first process (pid, a child of bwrap, parent)
// and lets it go on. On an error the sandbox stays blocked; the caller kills it.
// A process that is already gone (its set-up failed, and bwrap says why) is
// not an error: nothing of the stage ran.
func (g *gate) open(pid, parent int) error {
	err := g.limit(pid, parent)
	if errors.Is(err, syscall.ESRCH) {
		err = nil
	}
	if err != nil {
		return err
	}
	_, err = g.w.Write([]byte{0})
	g.w.Close()
	return err
}

func (g *gate) limit(pid, parent int) error {
	switch pp := parentPid(pid); pp {
	case parent:
	case -1:
		return syscall.ESRCH
	default:
		return fmt.Errorf("limit the sandbox: process %d is not bwrap's child (parent %d, bwrap %d)", pid, pp, parent)
	}
	for _, procs := range g.cgroups {
		if err := os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	if g.nproc > 0 {
		lim := unix.Rlimit{Cur: uint64(g.nproc), Max: uint64(g.nproc)}
		if err := unix.Prlimit(pid, unix.RLIMIT_NPROC, &lim, nil); err != nil {
			return fmt.Errorf("set process limit: %w", err)
		}
	}
	return nil
}

func (g *gate) close() {
	g.r.Close()
	g.w.Close()
}

// formatBytes writes n in the largest IEC unit that divides it, e.g. "512MiB".
func formatBytes(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// run starts cmd with its output pipes, its status pipe (fd 3) and extra
// (fd 4 on), supervises it and returns after the process exited and its output
// was drained. onChild, when set, is called with the sandbox's first process
// as soon as bwrap reports it, and cmd's pid; an error from it kills the
// sandbox.
func run(ctx context.Context, cmd *exec.Cmd, spec *Spec, timeout time.Duration, extra []*os.File, onChild func(pid, parent int) error) (int, error) {
	name := spec.Command[0]
	limitHit := make(chan struct{})
	out := &output{limit: spec.MaxOutput, onLimit: func() { close(limitHit) }}

	var closeAfterStart, readers []*os.File
	defer func() {
		for _, f := range append(closeAfterStart, readers...) {
			f.Close()
		}
	}()
	pipe := func() (*os.File, *os.File, error) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("sandbox: run %s: %w", name, err)
		}
		closeAfterStart = append(closeAfterStart, w)
		readers = append(readers, r)
		return r, w, nil
	}
	stdoutR, stdoutW, err := pipe()
	if err != nil {
		return -1, err
	}
	cmd.Stdout = stdoutW
	stdoutDst := &stream{out: out, w: spec.Stdout}
	var stderrR *os.File
	stderrDst := stdoutDst
	if sameWriter(spec.Stdout, spec.Stderr) {
		cmd.Stderr = stdoutW
		stdoutDst.tail = &tail{}
	} else {
		var w *os.File
		if stderrR, w, err = pipe(); err != nil {
			return -1, err
		}
		cmd.Stderr = w
		stderrDst = &stream{out: out, w: spec.Stderr, tail: &tail{}}
	}
	statusR, statusW, err := pipe()
	if err != nil {
		return -1, err
	}
	cmd.ExtraFiles = append([]*os.File{statusW}, extra...) // fd 3, 4, ...

	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("sandbox: run %s: %w: start %s: %v", name, ErrSetup, cmd.Path, err)
	}
	for _, f := range closeAfterStart {
		f.Close()
	}
	closeAfterStart = nil
	pid := cmd.Process.Pid

	var drain sync.WaitGroup
	copyOut := func(r *os.File, s *stream) {
		defer drain.Done()
		io.Copy(s, r)
	}
	drain.Add(1)
	go copyOut(stdoutR, stdoutDst)
	if stderrR != nil {
		drain.Add(1)
		go copyOut(stderrR, stderrDst)
	}
	var status bwrapStatus
	var childPid atomic.Int64
	childKnown := make(chan struct{})
	var childErr error
	childFailed := make(chan struct{})
	drain.Add(1)
	go func() {
		defer drain.Done()
		status = readStatus(statusR, func(p int) {
			if onChild != nil {
				if childErr = onChild(p, pid); childErr != nil {
					close(childFailed)
				}
			}
			childPid.Store(int64(p))
			close(childKnown)
		})
	}()

	// Supervise: cancellation and the output cap both end the sandbox.
	grace := spec.KillGrace
	if grace == 0 {
		grace = DefaultKillGrace
	}
	exited := make(chan struct{})
	var killOnce sync.Once
	kill := func() {
		killOnce.Do(func() { go stop(pid, &childPid, childKnown, exited, grace) })
	}
	supervised := make(chan struct{})
	go func() {
		defer close(supervised)
		select {
		case <-ctx.Done():
			kill()
		case <-limitHit:
			kill()
		case <-childFailed:
			kill()
		case <-exited:
		}
	}()

	waitErr := cmd.Wait()
	close(exited)
	<-supervised

	drained := make(chan struct{})
	go func() { drain.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		for _, r := range readers {
			r.Close()
		}
		<-drained
		return -1, fmt.Errorf("sandbox: run %s: output pipes still open %s after the process exited", name, drainTimeout)
	}

	switch {
	case out.exceeded.Load():
		return -1, fmt.Errorf("sandbox: run %s: %w: more than %d bytes of output, process killed", name, ErrOutputLimit, spec.MaxOutput)
	case childErr != nil:
		return -1, fmt.Errorf("sandbox: run %s: %w: %v", name, ErrSetup, childErr)
	case ctx.Err() != nil && context.Cause(ctx) == ErrTimeout:
		return -1, fmt.Errorf("sandbox: run %s: %w after %s", name, ErrTimeout, timeout)
	case ctx.Err() != nil:
		return -1, fmt.Errorf("sandbox: run %s: %w", name, ctx.Err())
	case !status.exited:
		// bwrap writes "exit-code" only for a command it ran; without it the
		// sandbox set-up (or the exec of the command) failed.
		msg := stderrDst.tail.String()
		if msg == "" && waitErr != nil {
			msg = waitErr.Error()
		}
		return -1, fmt.Errorf("sandbox: run %s: %w: %s", name, ErrSetup, msg)
	}
	return status.exitCode, nil
}

// stop ends a sandbox whose bwrap (or helper) process is pid. bwrap does not
// forward signals and its sandbox init (the "child-pid" it reports) may not
// yet have armed its parent-death signal, so killing bwrap alone can orphan
// the stage. Instead the sandbox init is killed with SIGKILL first, which
// tears down the whole pid namespace; then bwrap's process group gets
// SIGTERM, and SIGKILL after grace if it is still there.
func stop(pid int, childPid *atomic.Int64, childKnown, exited <-chan struct{}, grace time.Duration) {
	select {
	case <-childKnown:
	case <-exited:
	case <-time.After(grace):
	}
	if cp := int(childPid.Load()); cp > 0 && parentPid(cp) == pid {
		syscall.Kill(cp, syscall.SIGKILL)
	}
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
	}
	// Once the leader exited, stragglers of its group die too (ESRCH otherwise).
	syscall.Kill(-pid, syscall.SIGKILL)
}

// parentPid returns the parent of pid from /proc, or -1.
func parentPid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The command name may contain spaces and parentheses: parse after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	var state byte
	var ppid int
	if _, err := fmt.Sscanf(string(b[i+1:]), " %c %d", &state, &ppid); err != nil {
		return -1
	}
	return ppid
}

// bwrapStatus is what bwrap reported on its --json-status-fd.
type bwrapStatus struct {
	started  bool // bwrap reported "child-pid": the sandbox init was cloned
	exited   bool // bwrap reported "exit-code": the command ran and exited
	exitCode int
}

func readStatus(r io.Reader, onChild func(pid int)) bwrapStatus {
	var st bwrapStatus
	dec := json.NewDecoder(r)
	for {
		var m map[string]json.RawMessage
		if err := dec.Decode(&m); err != nil {
			io.Copy(io.Discard, r)
			return st
		}
		if v, ok := m["child-pid"]; ok && !st.started {
			var p int
			if json.Unmarshal(v, &p) == nil && p > 0 {
				st.started = true
				onChild(p)
			}
		}
		if v, ok := m["exit-code"]; ok && json.Unmarshal(v, &st.exitCode) == nil {
			st.exited = true
		}
	}
}

// output counts the bytes of both streams against the cap.
type output struct {
	limit    int64
	n        atomic.Int64
	exceeded atomic.Bool
	onLimit  func()
}

// stream delivers one pipe to its writer, within the cap. Errors of the
// destination writer stop delivery but not draining.
type stream struct {
	out  *output
	w    io.Writer
	tail *tail
	werr error
}

func (s *stream) Write(p []byte) (int, error) {
	n := len(p)
	if s.out.limit > 0 {
		end := s.out.n.Add(int64(n))
		if end > s.out.limit {
			allowed := s.out.limit - (end - int64(n))
			if allowed < 0 {
				allowed = 0
			}
			p = p[:allowed]
			if s.out.exceeded.CompareAndSwap(false, true) {
				s.out.onLimit()
			}
		}
	}
	if s.tail != nil {
		s.tail.Write(p)
	}
	if s.w != nil && s.werr == nil && len(p) > 0 {
		_, s.werr = s.w.Write(p)
	}
	return n, nil
}

// tail keeps the last bytes written, for setup error messages.
type tail struct{ b []byte }

const tailSize = 2048

func (t *tail) Write(p []byte) {
	t.b = append(t.b, p...)
	if len(t.b) > tailSize {
		t.b = append([]byte(nil), t.b[len(t.b)-tailSize:]...)
	}
}

func (t *tail) String() string {
	if t == nil {
		return ""
	}
	return string(bytes.TrimSpace(t.b))
}

// sameWriter reports whether a and b are the same writer, without panicking
// on writers of uncomparable types.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

// removeAllForce removes a directory tree, making directories searchable
// when that is what stops it (overlayfs leaves a mode-000 work/work
// directory, which only root can remove as it is).
func removeAllForce(dir string) error {
	if os.RemoveAll(dir) == nil {
		return nil
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
