// Package executor runs a verified plan (compiler/plan.Verified) over the local
// store and reports everything as one stream of events. It is four pieces with
// narrow seams (DESIGN §4), so that a local build, a remote cache and a remote
// worker are the same code wired differently:
//
//   - the walker (walk) takes the nodes the targets select in dependency order,
//     ready ones by rank (sources, stages, outputs, jobs and hooks, publish) then
//     plan order, at most Options.Jobs at a time, and hands each to a
//     [Dispatcher] with its dependencies' results. A failed node's dependents are
//     skipped; without Options.KeepGoing nothing starts after a failure.
//     Pre-build hooks run before every other node, cleanup hooks after all of
//     them, whatever happened (not after cancellation);
//   - the local dispatcher (cached) is the action cache as a decorator: a node
//     is looked up by its strong key; on a miss its key's lock is taken (two
//     strata processes on one store build a key once; the waiting one says whom
//     it waits for), it is looked up again, run, and its result recorded with
//     its key inputs under its weak key for [Explain];
//   - a [Runner] runs one node of a verified plan (plan.VerifiedNode) given its dependencies' results as content
//     descriptors ([Result]: tree, outputs, log), never paths into another
//     node's working state. [LocalRunner] has one operation per node kind:
//     sources are fetched into the store; stages run in bubblewrap over a
//     copy-on-write view of their input tree and their changes are committed;
//     outputs are assembled (executor/output); jobs and hooks run commands; a
//     publish node goes to Options.Publisher (the registry), or is skipped;
//   - the store (executor/store) holds content by digest, trees, the action
//     cache and leases: the build holds a lease on what it uses and makes, so
//     GC keeps it and never waits for a build.
//
// Finally [Build] exports the images it finished into the workspace's out/
// directory: copies the user owns (export.go), never links into the store.
//
// Built-in stages run as "/run/strata/bin/strata builtin TYPE" from
// Options.Binary and say what their sandbox cannot hold (owners without root,
// device nodes) in a journal only they are given (executor/builtin); strata.run
// runs its command; a stage module its node's command. A node's stdout and
// stderr are kept whole in a log blob (strata logs) and reported line by line,
// all before its done event; a failure is a *[NodeError] naming the node, its
// CUE origin, the exit status and the end of the log.
//
// Events ([Event]: queued, started, cached, done, failed, skipped, waiting, log
// lines, warnings, explanations, bytes) go to Options.Events, one call at a
// time.
package executor
