// Package compiler lowers a validated workspace (lang's model) into a plan: nodes
// for sources, stages, outputs, hooks, jobs and publish steps, each with a strong
// key (its ID) and a weak key computed as the SHA-256 of RFC 8785 canonical JSON of
// its key inputs, following BuildStream's rules:
//
//   - strong keys hash the strong keys of the node's build-time dependencies, so
//     they are exact transitively; weak keys hash the dependencies' names, so they
//     change only when the node itself or its environment changes;
//   - only build-time inputs count: an image shipped beside another (runtime)
//     changes neither key;
//   - positions, comments, field order and the workspace's location never enter a
//     key.
//
// It also holds the stage module registry: every stage type's name, docs, option
// schema and implementation digest.
package compiler
