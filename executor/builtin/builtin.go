package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/strata-build/strata/executor/tree"
)

// Fixed paths inside the sandbox, shared with the executor that sets it up.
const (
	// BinaryPath is where the static strata binary is bound read-only.
	BinaryPath = "/run/strata/bin/strata"
	// TreeDir is the target tree, bound read-write.
	TreeDir = "/run/strata/tree"
	// InputsDir holds one read-only entry per named stage input.
	InputsDir = "/run/strata/inputs"
	// OptionsFile holds the stage's options as JSON.
	OptionsFile = "/run/strata/options.json"
)

// Default extraction limits, used when the corresponding [Env] field is zero.
const (
	// DefaultMaxExtractBytes caps the uncompressed size of an archive (64 GiB).
	// The cap is lowered to 9/10 of the free space of the tree's filesystem
	// when that is smaller.
	DefaultMaxExtractBytes int64 = 64 << 30
	// DefaultMaxExtractEntries caps the number of entries in an archive.
	DefaultMaxExtractEntries int64 = 10_000_000
)

var (
	// ErrUnknownType is returned by [Run] for a type that is not built in.
	ErrUnknownType = errors.New("unknown built-in stage type")
	// ErrExecutorStage is returned by [Run] for strata.run, whose command the
	// executor runs itself (see [RunCommand]).
	ErrExecutorStage = errors.New("stage is run by the executor, not in Go")
	// ErrLimit is wrapped by extraction errors caused by a size, count or
	// length cap.
	ErrLimit = errors.New("archive exceeds a limit")
	// ErrUnsafeEntry is wrapped by extraction errors caused by an archive entry
	// that is refused for safety (a ".." path, a device node, a hard link to a
	// missing or non-regular file, an entry replacing the extraction root).
	ErrUnsafeEntry = errors.New("unsafe archive entry")
)

// Env is the environment of one stage run.
type Env struct {
	// Tree is the directory of the target tree.
	Tree string
	// Inputs maps an input name to the path of the input (a file or a
	// directory), read-only.
	Inputs map[string]string
	// Stdout and Stderr receive the output of commands a stage runs; nil
	// discards it.
	Stdout, Stderr io.Writer
	// SourceDateEpoch is the build's timestamp in seconds (SOURCE_DATE_EPOCH);
	// stages use it instead of the clock.
	SourceDateEpoch int64
	// MaxExtractBytes caps the uncompressed bytes strata.extract reads;
	// zero means DefaultMaxExtractBytes.
	MaxExtractBytes int64
	// MaxExtractEntries caps the entries strata.extract reads; zero means
	// DefaultMaxExtractEntries.
	MaxExtractEntries int64
	// Records, when set, receives the journal of owners and devices the stage
	// means for the tree (see RecordsEnv); nil means the sandbox can set
	// them itself, or the stage fails.
	Records io.Writer
	// TreeManifest and InputManifests are the manifests of the tree and of
	// each input as the store holds them: owners come from them, since a
	// sandbox without root shows every file as root's. Nil means the files'
	// own owners are true.
	TreeManifest   *tree.Tree
	InputManifests map[string]*tree.Tree

	journal *journal
}

// StageInfo describes a built-in stage type.
type StageInfo struct {
	// Name is the stage type, such as "strata.files".
	Name string
	// Doc is a one-paragraph description of the stage.
	Doc string
}

type stageFunc func(ctx context.Context, options []byte, env Env) error

type stage struct {
	info StageInfo
	run  stageFunc
}

// stages is the immutable table of built-in types.
var stages = map[string]stage{
	"strata.files": {StageInfo{Doc: "Create directories, files, symbolic links and device nodes with modes and owners."}, runFiles},
	"strata.copy":  {StageInfo{Doc: "Copy a file or directory from an input into the tree, keeping modes and symbolic links."}, runCopy},
	"strata.extract": {StageInfo{Doc: "Extract a tar, tar.gz or tar.zst archive from an input into the tree, refusing entries that escape it."},
		runExtract},
	"strata.run":         {StageInfo{Doc: "Run a command in the build root against the tree, or chrooted into the tree (run by the executor)."}, runRun},
	"strata.users":       {StageInfo{Doc: "Add or replace users and groups in /etc/passwd, /etc/group and /etc/shadow."}, runUsers},
	"strata.hostname":    {StageInfo{Doc: "Write /etc/hostname and the 127.0.1.1 line of /etc/hosts."}, runHostname},
	"strata.busybox":     {StageInfo{Doc: "Install a busybox binary from the build root into the tree with its applet links."}, runBusybox},
	"strata.debootstrap": {StageInfo{Doc: "Bootstrap a Debian tree with mmdebstrap from the build root (needs network)."}, runDebootstrap},
}

// Types returns the built-in stage types, sorted.
func Types() []string {
	names := make([]string, 0, len(stages))
	for name := range stages {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Info returns the description of a built-in stage type and whether it exists.
func Info(typ string) (StageInfo, bool) {
	s, ok := stages[typ]
	if !ok {
		return StageInfo{}, false
	}
	info := s.info
	info.Name = typ
	return info, true
}

// Run runs the built-in stage typ with its JSON options against env. Errors
// are prefixed with the type and name the offending option and path. For
// strata.run it validates the options and returns [ErrExecutorStage].
func Run(ctx context.Context, typ string, options []byte, env Env) error {
	s, ok := stages[typ]
	if !ok {
		return fmt.Errorf("%w %q (known: %v)", ErrUnknownType, typ, Types())
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", typ, err)
	}
	if env.Tree == "" {
		return fmt.Errorf("%s: no target tree", typ)
	}
	if env.Stdout == nil {
		env.Stdout = io.Discard
	}
	if env.Stderr == nil {
		env.Stderr = io.Discard
	}
	if env.Records != nil {
		env.journal = newJournal(env.Records)
	}
	if err := s.run(ctx, options, env); err != nil {
		return fmt.Errorf("%s: %w", typ, err)
	}
	return nil
}

// decode strictly decodes JSON options into v: unknown fields, trailing data
// and type mismatches are errors. Empty options mean {}.
func decode(options []byte, v any) error {
	if len(bytes.TrimSpace(options)) == 0 {
		options = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(options))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("options: %w", err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return errors.New("options: trailing data after the JSON object")
	}
	return nil
}

// input returns the path of the named input.
func input(env Env, field, name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%s: missing input name", field)
	}
	p, ok := env.Inputs[name]
	if !ok {
		names := make([]string, 0, len(env.Inputs))
		for n := range env.Inputs {
			names = append(names, n)
		}
		slices.Sort(names)
		return "", fmt.Errorf("%s: input %q is not bound to this stage (inputs: %v)", field, name, names)
	}
	return p, nil
}
