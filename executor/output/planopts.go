package output

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// PlanOptions are an output node's options as the compiler writes them into a
// plan: its format options (with the schema's defaults applied) and, for oci,
// the image's version and annotations (the artifact's name is the node's
// Artifact field). They are part of
// the node's key, so everything that changes the artifact is here.
type PlanOptions struct {
	// Size is the ext4 size (Options.Size).
	Size int64 `json:"size,omitempty"`
	// Compression is Options.Compression.
	Compression string `json:"compression,omitempty"`
	// Label is the ext4 volume label (Options.Label).
	Label string `json:"label,omitempty"`
	// InodesExtra is Options.InodesExtra.
	InodesExtra int `json:"inodes_extra,omitempty"`
	// Version and Annotations are the image's, for oci (Options.Version and
	// Options.Annotations).
	Version     string            `json:"version,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Config is the oci image config.
	Config *ImageConfig `json:"config,omitempty"`
}

// ImageConfig is the config option of the oci output.
type ImageConfig struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	User         string            `json:"user,omitempty"`
	WorkingDir   string            `json:"workdir,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	ExposedPorts []string          `json:"exposed_ports,omitempty"`
}

// DecodePlanOptions decodes an output node's options strictly: an option this
// version does not know would otherwise be ignored and give an artifact other
// than the one the key stands for.
func DecodePlanOptions(b []byte) (PlanOptions, error) {
	var p PlanOptions
	if len(bytes.TrimSpace(b)) == 0 {
		return p, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return PlanOptions{}, fmt.Errorf("%w: output options: %v", ErrInvalidOptions, err)
	}
	return p, nil
}

// Apply sets the fields of opts that p carries; Format, SourceDateEpoch,
// Platform, Checkout and TempDir are the executor's.
func (p PlanOptions) Apply(opts *Options) {
	opts.Size = p.Size
	opts.Compression = p.Compression
	opts.Label = p.Label
	opts.InodesExtra = p.InodesExtra
	opts.Version = p.Version
	opts.Annotations = p.Annotations
	if c := p.Config; c != nil {
		opts.Entrypoint, opts.Cmd, opts.Env = c.Entrypoint, c.Cmd, c.Env
		opts.User, opts.WorkingDir = c.User, c.WorkingDir
		opts.Labels, opts.ExposedPorts = c.Labels, c.ExposedPorts
	}
}
