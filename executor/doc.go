// Package executor runs a compiled plan (package compiler/plan) over the local
// store: it schedules the plan's nodes, fetches sources, runs stages in the
// bubblewrap sandbox with copy-on-write staging, assembles outputs, runs hooks
// and jobs, and reports everything as one stream of events.
//
// # Scheduling
//
// [Build] runs the nodes the targets select (see [Options.Targets]) once all of
// their dependencies are done, at most [Options.Jobs] at a time. Ready nodes are
// taken in the order sources → stages → outputs → jobs and hooks → publish, and
// in plan order within a kind. Every node but a hook is first looked up in the
// action cache by its strong key (its ID); a hit runs nothing. On a miss the
// node's key lock is taken, so two strata processes sharing a store build a key
// once (the second finds it in the cache after the lock), the node runs, and its
// result is recorded with PutAction, together with its key inputs under its weak
// key for [Explain]. The build holds the store's Hold lock from start to end, so
// a concurrent GC or Verify waits. After a failure no new node starts unless
// [Options.KeepGoing]; nodes that depend on a failed node are skipped. When ctx
// is cancelled, running stages are stopped (the sandbox kills their process
// trees), nothing half-built is recorded, and the rest is skipped.
//
// Scratch space lives in the store, in work/w-<random>/ guarded by an flock, so
// that committing hardlinks files instead of copying them; a build that died
// leaves its directory behind and the next build removes it.
//
// # Node kinds
//
// A source becomes a tree in the store. A url source is downloaded (http, https
// or file) while its sha256 is checked; on a mismatch the error names the URL,
// the expected and the actual digest, and nothing is stored. A path source
// (relative to [Options.Workspace]) is copied and the copy is hashed as the
// compiler hashed it: if it changed since compile the build fails with
// [ErrSourceChanged]. A git source is cloned and checked out at its commit, and
// .git is dropped. A directory source's tree is the directory's contents; a file
// source's tree holds the one file under its base name, and a stage that mounts
// such a source sees the file itself at /run/strata/inputs/<name>. Source trees
// are owned by 0:0; modes are kept.
//
// A stage runs in the sandbox: its input tree (a read-only store checkout, or an
// empty directory) is the lower layer of an overlay whose upper layer receives
// the stage's changes, which are then committed on top of the input tree with
// store.CommitUpper (with copy staging, the upper directory holds the whole tree
// and is committed as it is). The build root is the host's (plan "host") or a
// checkout of another image's tree; named inputs are checkouts bound read-only;
// the options are the node's canonical options. A built-in stage runs as
// "/run/strata/bin/strata builtin TYPE" from [Options.Binary]; strata.run runs
// its command (see builtin.RunCommand); a user stage module runs node.Command.
// The stage's stdout and stderr are kept whole in a log blob ("strata logs") and
// reported line by line as events, all before the node's done event. A failure is
// a *[NodeError] naming the node, its CUE origin, the exit status and the last
// lines of the log. When strata does not run as root, files the stage created
// belong to the invoking user on the host; their owner is recorded as 0:0, which
// is what they were inside the sandbox.
//
// An output assembles its input tree with package executor/output. A file
// artifact (tar, tar.zst, squashfs, ext4, erofs) is stored as a blob; an oci
// layout directory is stored as a tree, and the output's digest is its image
// manifest's; a tree output is the tree itself. The artifact is then
// materialised at <OutDir>/<image>/<output name> (OutDir defaults to
// <store>/out): a hardlink of the blob, a hardlinked copy of the oci layout, or
// for a tree output a symbolic link to the store's read-only checkout (valid
// until the store's GC removes the checkout). Files under OutDir share their
// inode with store objects and must not be modified in place.
//
// A hook runs its command in its build root with an empty, throwaway tree and
// the image's outputs (for post-build hooks) bound read-only at
// /run/strata/outputs/<output name>. Hooks are side effects: they are never
// cached and run in every build that includes them. With on_failure "warn" a
// failing hook is an EventWarning; with "fail" (the default) it fails the build.
//
// A job runs its command in its build root with the image's tree (if it names
// one) as a copy-on-write tree whose changes are thrown away. Its result is its
// log, cached under its key. The outputs a job lists are not collected yet.
//
// A publish node is skipped with [ErrNotImplemented]: publishing is "strata push".
//
// # Events
//
// Every step is reported through [Options.Events] as an [Event]: queued,
// started, cached, done, failed, skipped, log lines, warnings, explanations and
// transferred bytes. The function is called from one goroutine at a time.
package executor
