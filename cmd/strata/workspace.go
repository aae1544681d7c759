package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	schema "github.com/strata-build/strata/cue"
	"github.com/strata-build/strata/lang"
)

// cueLanguageVersion is the CUE language version new workspaces declare; it
// matches the pinned cuelang.org/go.
const cueLanguageVersion = "v0.17.1"

func newInitCmd(g *globals) *cobra.Command {
	var module string
	cmd := &cobra.Command{
		Use:   "init [DIR]",
		Short: "Create a new workspace with a starter spec that builds",
		Long: `init writes cue.mod/module.cue, the vendored strata schema (for editors and
the upstream cue command) and a starter spec: a busybox root filesystem with a
hostname and a user, assembled as a tar file. Existing files are never
overwritten.

  strata init myimage && strata -C myimage vet`,
		Example: `  strata init myimage
  strata init --module example.com/fleet fleet`,
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			dir := g.dir
			if len(a) == 1 {
				dir = a[0]
			}
			return runInit(g, dir, module)
		},
	}
	cmd.Flags().StringVar(&module, "module", "", `CUE module path (default "example.com/<dir name>")`)
	return cmd
}

var nonModuleChars = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`[^a-z0-9._-]+`) })

func runInit(g *globals, dir, module string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if module == "" {
		name := nonModuleChars().ReplaceAllString(strings.ToLower(filepath.Base(abs)), "-")
		name = strings.Trim(name, "-.")
		if name == "" {
			name = "workspace"
		}
		module = "example.com/" + name
	}
	files := map[string]string{
		"cue.mod/module.cue": fmt.Sprintf("module: %q\nlanguage: version: %q\n", module, cueLanguageVersion),
		"strata.cue":         starterSpec,
	}
	for _, name := range []string{"cue.mod/module.cue", "strata.cue"} {
		if _, err := os.Stat(filepath.Join(abs, name)); err == nil {
			return &usageError{fmt.Errorf("%s already exists; init never overwrites files", filepath.Join(dir, name))}
		}
	}
	for _, name := range []string{"cue.mod/module.cue", "strata.cue"} {
		p := filepath.Join(abs, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := writeFileAtomic(p, func(w io.Writer) error { _, err := io.WriteString(w, files[name]); return err }); err != nil {
			return err
		}
	}
	if err := vendorSchema(abs); err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, map[string]any{"ok": true, "dir": dir, "module": module})
	}
	fmt.Fprintf(g.stdout, "created workspace %s (module %s)\nnext: strata -C %s vet\n", dir, module, dir)
	return nil
}

const starterSpec = `package workspace

import "strata.build/strata"

// A busybox root filesystem: run "strata vet", then "strata compile".
images: starter: strata.#Image & {
	version: "0.1.0"
	stages: [
		{type: "strata.busybox"},
		{type: "strata.hostname", options: hostname: "starter"},
		{type: "strata.users", options: users: admin: uid: 1000},
		{type: "strata.files", options: files: "/etc/motd": content: "Built with strata.\n"},
	]
	outputs: [{type: "tar"}]
}
`

func newModCmd(g *globals) *cobra.Command {
	mod := &cobra.Command{
		Use:     "mod",
		Short:   "Manage the workspace's CUE module",
		Example: "  strata mod vendor",
	}
	mod.AddCommand(&cobra.Command{
		Use:   "vendor",
		Short: "Write the strata schema under cue.mod/ for editors and the cue command",
		Long: `vendor writes the schema module strata.build/strata that this strata embeds to
cue.mod/pkg/strata.build/strata/, so that editors and the upstream cue command
("cue vet -c=false", "cue export -e images") resolve
import "strata.build/strata" with no network. strata itself always uses its
embedded copy.`,
		Example: `  strata mod vendor && cue vet -c=false .`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(filepath.Join(g.dir, "cue.mod", "module.cue")); err != nil {
				return fmt.Errorf("%s: %w: cue.mod/module.cue not found (run `strata init`)", g.dir, lang.ErrNotWorkspace)
			}
			if err := vendorSchema(g.dir); err != nil {
				return err
			}
			dst := filepath.Join(g.dir, lang.SchemaDir)
			if g.json() {
				return writeJSON(g.stdout, map[string]any{"ok": true, "dir": dst})
			}
			fmt.Fprintf(g.stdout, "vendored %s into %s\n", schema.ModulePath, dst)
			return nil
		},
	})
	return mod
}

func vendorSchema(dir string) error {
	dst := filepath.Join(dir, lang.SchemaDir)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("vendor schema: %w", err)
	}
	p := filepath.Join(dst, "schema.cue")
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, schema.Schema) {
		return nil
	}
	return writeFileAtomic(p, func(w io.Writer) error { _, err := w.Write(schema.Schema); return err })
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the strata version",
		Example: "  strata version\n  strata --output json version",
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.json() {
				return writeJSON(g.stdout, map[string]any{"version": strataVersion(), "schema": schema.ModulePath})
			}
			fmt.Fprintf(g.stdout, "strata %s\n", strataVersion())
			return nil
		},
	}
}
