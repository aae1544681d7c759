package builtin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
)

// busyboxOptions are the options of strata.busybox:
//
//	{"binary": "/bin/busybox", "install": "/bin/busybox", "applets": []}
//
// binary is a path in the build root (the sandbox's "/"), default
// "/bin/busybox"; it should be statically linked. install is the tree path the
// binary is copied to (mode 0755, owner 0:0), default "/bin/busybox". applets
// selects applets by name; empty (the default) installs all of them. Each
// applet becomes a symbolic link with the absolute target install, at the path
// "busybox --list-full" gives (as "busybox --install -s" does). An existing
// file at an applet path that is not a symbolic link is left alone; an
// existing symbolic link is replaced.
type busyboxOptions struct {
	Binary  string   `json:"binary"`
	Install string   `json:"install"`
	Applets []string `json:"applets"`
}

func runBusybox(ctx context.Context, options []byte, env Env) error {
	var o busyboxOptions
	if err := decode(options, &o); err != nil {
		return err
	}
	if o.Binary == "" {
		o.Binary = "/bin/busybox"
	}
	if o.Install == "" {
		o.Install = "/bin/busybox"
	}
	if !path.IsAbs(o.Binary) {
		return fmt.Errorf("binary: %q is not an absolute path in the build root", o.Binary)
	}
	installRel, err := treePath("install", o.Install)
	if err != nil {
		return err
	}
	if installRel == "." {
		return errors.New("install: must name a file, not the tree root")
	}
	target := "/" + installRel

	f, err := os.Open(o.Binary)
	if err != nil {
		return fmt.Errorf("binary: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("binary: %s is not a regular file", o.Binary)
	}

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, o.Binary, "--list-full")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = []string{}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("binary: %s --list-full: %w: %s", o.Binary, err, strings.TrimSpace(stderr.String()))
	}
	byName := map[string]string{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		rel, err := treePath("applet path", "/"+line)
		if err != nil || rel == "." {
			return fmt.Errorf("binary: %s --list-full printed an unusable path %q", o.Binary, line)
		}
		byName[path.Base(rel)] = rel
	}
	if len(byName) == 0 {
		return fmt.Errorf("binary: %s --list-full printed no applets", o.Binary)
	}
	var links []string
	if len(o.Applets) == 0 {
		for _, rel := range byName {
			links = append(links, rel)
		}
	} else {
		for i, a := range o.Applets {
			rel, ok := byName[a]
			if !ok {
				return fmt.Errorf("applets[%d]: %q is not an applet of %s", i, a, o.Binary)
			}
			links = append(links, rel)
		}
	}
	slices.Sort(links)
	links = slices.Compact(links)

	t, err := openTree(env)
	if err != nil {
		return fmt.Errorf("open tree: %w", err)
	}
	defer t.Close()
	full, err := t.locate(installRel, true)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := t.clearForFile(full); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := t.writeFile(full, f, 0o755, rootOwner); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	for _, rel := range links {
		lfull, err := t.locate(rel, true)
		if err != nil {
			return fmt.Errorf("applet %s: %w", show(rel), err)
		}
		if lfull == full {
			continue
		}
		fi, err := t.root.Lstat(lfull)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("applet %s: %w", show(rel), err)
		case fi.Mode()&fs.ModeSymlink == 0:
			continue // Never replace a real file or directory.
		default:
			if err := t.root.Remove(lfull); err != nil {
				return fmt.Errorf("applet %s: %w", show(rel), err)
			}
		}
		if err := t.root.Symlink(target, lfull); err != nil {
			return fmt.Errorf("applet %s: %w", show(rel), err)
		}
		if err := t.lchown(lfull, rootOwner); err != nil {
			return err
		}
	}
	return ctx.Err()
}
