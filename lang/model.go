package lang

import (
	"encoding/json"
	"fmt"
	"time"
)

// Pos is a position in a workspace file; File is relative to the workspace directory
// so that a model (and a plan) does not depend on where the workspace lives.
type Pos struct {
	File string `json:"file"`
	Line int    `json:"line"`
	Col  int    `json:"col"`
}

func (p Pos) String() string {
	if p.File == "" {
		return "-"
	}
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Workspace is a loaded, validated workspace. Maps are keyed by name; template
// instances are merged into Images and Jobs, each marked with its Instance.
type Workspace struct {
	// Dir is the absolute workspace directory. It is never part of a key.
	Dir          string
	Sources      map[string]*Source
	Resources    map[string]*Resource
	StageModules map[string]*StageModule
	Images       map[string]*Image
	Jobs         map[string]*Job
	Hooks        map[string]*Hook
	Templates    map[string]*Template
	// Warnings are findings that do not stop a build, such as non-hermetic build roots.
	Warnings []Warning
}

// Warning is a finding at a position that does not make the workspace invalid.
type Warning struct {
	Pos  Pos    `json:"pos"`
	Path string `json:"path"`
	Msg  string `json:"message"`
}

func (w Warning) String() string {
	if w.Path == "" {
		return fmt.Sprintf("%s: %s", w.Pos, w.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", w.Pos, w.Path, w.Msg)
}

// Source is something fetched into the store before a build: exactly one of URL
// (with SHA256), Path or Git (with Commit) is set.
type Source struct {
	Name   string `json:"name"`
	URL    string `json:"url,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Path   string `json:"path,omitempty"`
	Git    string `json:"git,omitempty"`
	Commit string `json:"commit,omitempty"`
	Pos    Pos    `json:"pos"`
}

// Resource is a list of records, written down or produced at build time by Job.
type Resource struct {
	Name string `json:"name"`
	// Records are the records as JSON: written down, or (for a job's resource)
	// what the job wrote, unified with Schema, when Load was given them.
	Records []json.RawMessage `json:"records,omitempty"`
	Job     string            `json:"job,omitempty"`
	// Schema is the schema a job's records are checked against, as canonical
	// CUE source; empty when the resource declares none.
	Schema string `json:"schema,omitempty"`
	// Pending reports that Job's records were not given to Load: the templates
	// over the resource wait on the job.
	Pending bool `json:"pending,omitempty"`
	Pos     Pos  `json:"pos"`
}

// StageModule is a stage type: built in (strata.*) or declared under stages:.
type StageModule struct {
	Name    string `json:"name"`
	Doc     string `json:"doc"`
	Builtin bool   `json:"builtin"`
	// Schema is the option schema as canonical CUE source (fields sorted, no
	// comments), so reformatting a module does not change its digest.
	Schema string `json:"schema"`
	// Command is the command template as canonical CUE source; empty for built-ins.
	Command   string `json:"command,omitempty"`
	BuildRoot string `json:"buildroot,omitempty"`
	Pos       Pos    `json:"pos"`
}

// Platform is the operating system and architecture an image is built for.
type Platform struct {
	OS   string `json:"os"`
	Arch string `json:"arch"`
}

// Capabilities is what a node needs from the worker that runs it.
type Capabilities struct {
	Arch     string   `json:"arch,omitempty"`
	Features []string `json:"features,omitempty"`
}

// Publish says where an image's artifacts are pushed.
type Publish struct {
	Repository string   `json:"repository"`
	Tags       []string `json:"tags"`
}

// Output is one artifact assembled from an image's final tree.
type Output struct {
	Type string `json:"type"`
	Name string `json:"name"`
	Size int64  `json:"size,omitempty"`
	// Compression (squashfs, erofs, oci), Label and InodesExtra (ext4) and
	// Config (oci) are format options, with the schema's defaults.
	Compression string     `json:"compression,omitempty"`
	Label       string     `json:"label,omitempty"`
	InodesExtra int64      `json:"inodes_extra,omitempty"`
	Config      *OCIConfig `json:"config,omitempty"`
	Pos         Pos        `json:"pos"`
}

// OCIConfig is the image config of an oci output.
type OCIConfig struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	User         string            `json:"user,omitempty"`
	WorkDir      string            `json:"workdir,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	ExposedPorts []string          `json:"exposed_ports,omitempty"`
}

// Stage is one step of an image. Options are the stage's options as JSON with the
// type's defaults applied; Command is set for stages of user modules (the module's
// command with the options interpolated).
type Stage struct {
	Type    string            `json:"type"`
	Options json.RawMessage   `json:"options"`
	Command []string          `json:"command,omitempty"`
	Inputs  map[string]string `json:"inputs,omitempty"`
	Network bool              `json:"network"`
	Limits  Limits            `json:"limits,omitzero"`
	Pos     Pos               `json:"pos"`
}

// Limits bound how a stage, job or hook runs: executor policy, not part of any
// key. Zero means the executor's default.
type Limits struct {
	Timeout time.Duration `json:"timeout,omitempty"`
	// Memory and TmpSize are in bytes.
	Memory  int64 `json:"memory,omitempty"`
	TmpSize int64 `json:"tmp_size,omitempty"`
}

// Instance records which template record produced an image or job.
type Instance struct {
	Template string `json:"template"`
	Resource string `json:"resource"`
	Record   int    `json:"record"`
	// RecordPos is where the record is: in the workspace's files, or for a job's
	// resource the record's line of what the job wrote
	// (jobs.probe/records.jsonl:3:1).
	RecordPos Pos `json:"record_pos"`
	// Pos is the template line that defines the image or job.
	Pos Pos `json:"pos"`
}

// Image is an image to build.
type Image struct {
	Name        string            `json:"name"`
	Version     string            `json:"version"`
	Platform    Platform          `json:"platform"`
	DeviceTypes []string          `json:"device_types"`
	Default     bool              `json:"default"`
	BuildRoot   string            `json:"buildroot"`
	From        string            `json:"from,omitempty"`
	Stages      []Stage           `json:"stages"`
	Outputs     []Output          `json:"outputs"`
	Publish     *Publish          `json:"publish,omitempty"`
	Hooks       []string          `json:"hooks,omitempty"`
	Requires    *Capabilities     `json:"requires,omitempty"`
	Runtime     []string          `json:"runtime,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Instance    *Instance         `json:"instance,omitempty"`
	Pos         Pos               `json:"pos"`
}

// Job is a command run in a build root against built images. The job of a
// resource lists RecordsFile among its Outputs, whether or not the spec does.
type Job struct {
	Name      string        `json:"name"`
	Image     string        `json:"image,omitempty"`
	BuildRoot string        `json:"buildroot"`
	Command   []string      `json:"command"`
	Needs     []string      `json:"needs"`
	Requires  *Capabilities `json:"requires,omitempty"`
	Outputs   []string      `json:"outputs,omitempty"`
	Network   bool          `json:"network"`
	Limits    Limits        `json:"limits,omitzero"`
	Instance  *Instance     `json:"instance,omitempty"`
	Pos       Pos           `json:"pos"`
}

// Hook is a host-side tool run around builds.
type Hook struct {
	Name      string        `json:"name"`
	On        string        `json:"on"`
	BuildRoot string        `json:"buildroot"`
	Command   []string      `json:"command"`
	OnFailure string        `json:"on_failure"`
	Requires  *Capabilities `json:"requires,omitempty"`
	Limits    Limits        `json:"limits,omitzero"`
	Pos       Pos           `json:"pos"`
}

// Template is a template job and what instantiating it gave.
type Template struct {
	Name     string `json:"name"`
	Resource string `json:"resource"`
	// Param is the name the record is bound to inside each.
	Param string `json:"param"`
	// Filter is the source of the if expression, empty when there is none.
	Filter string `json:"filter,omitempty"`
	// Job is the job that writes the resource's records, for a job's resource.
	Job string `json:"job,omitempty"`
	// Pending reports that the template waits on Job: its records, and so its
	// instances, exist once the job ran (see WithJobRecords).
	Pending bool             `json:"pending,omitempty"`
	Records []TemplateRecord `json:"records"`
	Pos     Pos              `json:"pos"`
}

// TemplateRecord is one record of a template's resource and its fate.
type TemplateRecord struct {
	Index  int             `json:"index"`
	Record json.RawMessage `json:"record"`
	Passed bool            `json:"passed"`
	// Reason says why a record was skipped.
	Reason string `json:"reason,omitempty"`
	// Defines lists the names the instance defines ("images.x", "jobs.y").
	Defines []string `json:"defines,omitempty"`
	// Errors are the errors the record's filter or instance gave, as printed.
	Errors []string `json:"errors,omitempty"`
}
