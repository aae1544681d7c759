package builtin

import (
	"context"
	"errors"
	"fmt"
	"github.com/strata-build/strata/executor/tree"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// RunFromSandbox runs the built-in stage typ inside the sandbox: it reads the
// options from OptionsFile, uses TreeDir as the tree and every entry of
// InputsDir as an input of the same name, takes SourceDateEpoch from the
// SOURCE_DATE_EPOCH variable (0 when unset), and writes command output to
// os.Stdout and os.Stderr.
func RunFromSandbox(ctx context.Context, typ string) error {
	return runFromDirs(ctx, typ, OptionsFile, TreeDir, InputsDir, os.Getenv("SOURCE_DATE_EPOCH"), os.Stdout, os.Stderr)
}

func runFromDirs(ctx context.Context, typ, optionsFile, treeDir, inputsDir, epoch string, stdout, stderr io.Writer) error {
	options, err := os.ReadFile(optionsFile)
	if err != nil {
		return fmt.Errorf("%s: read options: %w", typ, err)
	}
	env := Env{Tree: treeDir, Inputs: map[string]string{}, Stdout: stdout, Stderr: stderr}
	if epoch != "" {
		if env.SourceDateEpoch, err = strconv.ParseInt(epoch, 10, 64); err != nil || env.SourceDateEpoch < 0 {
			return fmt.Errorf("%s: SOURCE_DATE_EPOCH=%q is not a non-negative integer", typ, epoch)
		}
	}
	ents, err := os.ReadDir(inputsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: read inputs: %w", typ, err)
	}
	for _, e := range ents {
		env.Inputs[e.Name()] = filepath.Join(inputsDir, e.Name())
	}
	if p := os.Getenv(RecordsEnv); p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("%s: open records: %w", typ, err)
		}
		defer f.Close()
		env.Records = f
		if env.TreeManifest, err = readManifest(filepath.Join(ManifestsDir, "tree.json")); err != nil {
			return fmt.Errorf("%s: %w", typ, err)
		}
		env.InputManifests = map[string]*tree.Tree{}
		for name := range env.Inputs {
			m, err := readManifest(filepath.Join(ManifestsDir, "inputs", name+".json"))
			if err != nil {
				return fmt.Errorf("%s: %w", typ, err)
			}
			if m != nil {
				env.InputManifests[name] = m
			}
		}
	}
	return Run(ctx, typ, options, env)
}
