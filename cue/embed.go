// Package cue embeds the CUE schema module strata.build/strata so the binary can
// validate workspaces and vendor the schema with no network and no registry.
package cue

import _ "embed"

// ModulePath is the CUE module path of the schema.
const ModulePath = "strata.build/strata"

// Schema is the source of the schema package, as shipped in the binary.
//
//go:embed schema.cue
var Schema []byte
