// Package plan defines the plan: the versioned, deterministic JSON contract between
// the compiler and the executor. A plan is a list of nodes in dependency order, each
// with a strong key (its ID), a weak key, canonical options and input edges; it
// holds no CUE and no host paths, so `strata compile -o plan.json` followed by
// `strata build plan.json` does exactly what `strata build DIR` does.
package plan
