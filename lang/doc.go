// Package lang loads a strata workspace: a directory with cue.mod/module.cue and the
// .cue (and .json/.yaml) files of one package. It resolves the embedded schema
// module strata.build/strata offline, validates the workspace against it, checks each
// stage's options against the schema of its type, instantiates templates over their
// resources, and returns a typed Go model whose every element knows its position.
//
// lang is the only package that imports cuelang.org/go; nothing past it holds a
// cue.Value. Every error it returns is an Errors list whose entries carry
// file:line:col, the field path and what was expected.
package lang
