package builtin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// runOptions are the options of strata.run:
//
//	{"command": ["..."], "chroot": false, "env": {"K": "V"}}
//
// command is required and non-empty; chroot defaults to false (the command
// runs in the build root with the tree at TreeDir); env defaults to {}.
type runOptions struct {
	Command []string          `json:"command"`
	Chroot  bool              `json:"chroot"`
	Env     map[string]string `json:"env"`
}

// RunCommand validates the options of a strata.run stage and returns what the
// executor runs: the argv, the extra environment (never nil), and whether the
// command runs chrooted into the tree rather than in the build root.
func RunCommand(options []byte) (argv []string, env map[string]string, chroot bool, err error) {
	var o runOptions
	if err := decode(options, &o); err != nil {
		return nil, nil, false, fmt.Errorf("strata.run: %w", err)
	}
	if len(o.Command) == 0 {
		return nil, nil, false, errors.New("strata.run: command: must not be empty")
	}
	if o.Command[0] == "" {
		return nil, nil, false, errors.New("strata.run: command[0]: must name a program")
	}
	for i, a := range o.Command {
		if strings.ContainsRune(a, 0) {
			return nil, nil, false, fmt.Errorf("strata.run: command[%d]: contains a NUL byte", i)
		}
	}
	env = make(map[string]string, len(o.Env))
	for _, k := range slices.Sorted(maps.Keys(o.Env)) {
		v := o.Env[k]
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, nil, false, fmt.Errorf("strata.run: env: invalid variable name %q", k)
		}
		if strings.ContainsRune(v, 0) {
			return nil, nil, false, fmt.Errorf("strata.run: env[%q]: value contains a NUL byte", k)
		}
		env[k] = v
	}
	return slices.Clone(o.Command), env, o.Chroot, nil
}

func runRun(_ context.Context, options []byte, _ Env) error {
	if _, _, _, err := RunCommand(options); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "strata.run: "))
	}
	return ErrExecutorStage
}
