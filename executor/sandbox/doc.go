// Package sandbox runs one build stage inside a bubblewrap (bwrap) sandbox and
// detects what the host offers for doing so.
//
// [Detect] inspects the host once at start-up, like osbuild's detect_host_runner:
// bwrap and its version, unprivileged user namespaces, whether overlayfs can be
// mounted inside a user+mount namespace (probed for real in a child process),
// binfmt_misc qemu-user entries, /dev/kvm and the image tools strata calls.
// The resulting [Host] backs `strata doctor` and is passed to [Run].
//
// [Run] executes a [Spec]. Inside the sandbox:
//
//   - / is the build root, read-only: either a directory whose top-level entries
//     are bound read-only, or [HostRoot], the host's /usr, /bin, /sbin, /lib*
//     and a short allow-list of /etc files.
//   - /run/strata/tree is the stage's target tree, read-write.
//   - /run/strata/inputs/<name> are the stage's inputs, read-only.
//   - /run/strata/options.json holds the stage options, read-only.
//   - /run/strata/bin/strata is the static strata binary (or its companion,
//     see [BuiltinBinary]), read-only, when given.
//   - /proc is a fresh procfs of the sandbox's own pid namespace, /dev is
//     bwrap's minimal device set, /tmp is an empty tmpfs of [Spec.TmpSize].
//   - Every namespace is unshared (network too, unless [Spec.Network]), the
//     process runs in a new session as uid 0 with no capabilities, and the
//     environment is cleared (see [Spec.Env] for what it contains). As real
//     root the user namespace maps every id to itself, so owners are real
//     while the capabilities kept for them hold only inside it.
//   - A seccomp filter refuses the system calls listed in docs/security.md
//     (key rings, bpf, perf, modules, new namespaces, ...) with EPERM.
//   - Limits: a cgroup with pids.max and a memory limit ([Spec.MaxProcs],
//     [Spec.MaxMemory]; rootless without a delegated cgroup, RLIMIT_NPROC in
//     the sandbox's user namespace), a run time ([Spec.Timeout]) and an
//     output cap ([Spec.MaxOutput]).
//
// Copy-on-write staging: when a Spec gives [Spec.Lower] and [Spec.Upper]
// instead of [Spec.Tree], overlayfs is mounted in a mount namespace of the
// sandbox's own and bwrap gets the merged directory as the tree. As real root
// that namespace is one OS thread's, from which Run starts bwrap (see
// mountns.go); otherwise a user namespace is needed too, which a multithreaded
// process cannot make, so strata re-executes its own binary as a small helper
// in new user and mount namespaces that mounts overlayfs and execs bwrap (the
// companion binary, cmd/strata-sandbox, when [UseCompanion] found it). The
// lower directories are never modified; every change lands in the upper
// directory as overlayfs records it (whiteouts for deletions). A binary that
// uses staging without root MUST call [MaybeRunHelper] first thing in main (and
// tests in TestMain). Where overlayfs is unavailable, [Run] copies the lower
// directories into the upper one instead and [Host.Staging] says so.
//
// Nothing is left behind: a run's temporary directory and cgroup are removed
// when it ends, and those of a strata process that was killed are swept by the
// next one.
//
// The package does not log. Errors are wrapped with the operation that failed;
// [ErrSetup], [ErrOutputLimit], [ErrProcessLimit], [ErrMemoryLimit] and
// [ErrTimeout] can be tested with errors.Is.
package sandbox
