package sandbox

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
)

// replacedTopLevel are entries of a build root the sandbox supplies itself.
var replacedTopLevel = map[string]bool{"proc": true, "dev": true, "tmp": true, "run": true, "sys": true}

// hostRootDirs and hostEtc are what HostRoot binds from the host. Of /etc/ssl
// only the certificates and openssl.cnf: /etc/ssl/private holds the host's
// TLS keys, which root's capabilities in the sandbox's user namespace would
// read (a hook printed the snakeoil key).
var (
	hostRootDirs = []string{"usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32"}
	hostEtc      = []string{"ld.so.cache", "alternatives", "passwd", "group", "nsswitch.conf", "ssl/certs", "ssl/openssl.cnf", "ca-certificates"}
)

// bwrapFDs are the descriptors bwrap is given, as numbers in its process; 0
// means not given.
type bwrapFDs struct {
	// status is where bwrap reports its JSON status (always given).
	status int
	// options holds the stage options (always given).
	options int
	// userns is the identity user namespace to enter (root only).
	userns int
	// seccomp is the compiled filter.
	seccomp int
	// block holds the sandbox back until Run has limited it (see gate).
	block int
}

// bwrapArgs builds the bwrap arguments (without argv[0]) for spec, with tree
// the host directory to use as the target tree and fds the descriptors bwrap
// gets. A non-empty inputs is a directory already holding spec's inputs (see
// bindInputs), bound read-only as a whole.
//
// When strata runs as real root (realRoot), every uid and gid a tree uses
// stays a real id so that stages can set owners (strata.users, strata.files,
// package managers), as in osbuild: the sandbox enters the identity user
// namespace (fds.userns, where the host allows user namespaces) or none, the
// other namespaces are unshared, and the capabilities are dropped except those
// needed to manage file ownership (CAP_CHOWN, CAP_FOWNER, CAP_FSETID,
// CAP_DAC_OVERRIDE), which hold only inside that user namespace. Otherwise
// every namespace is unshared and the stage has no capabilities.
func bwrapArgs(spec *Spec, tree, inputs string, fds bwrapFDs, realRoot bool) ([]string, error) {
	var a []string
	if realRoot {
		if fds.userns > 0 {
			a = append(a, "--userns", strconv.Itoa(fds.userns))
		}
		a = append(a, "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try")
		if !spec.Network {
			a = append(a, "--unshare-net")
		}
	} else {
		a = append(a, "--unshare-all")
		if spec.Network {
			a = append(a, "--share-net")
		}
	}
	a = append(a,
		"--die-with-parent",
		"--new-session",
		"--cap-drop", "ALL",
	)
	if realRoot {
		a = append(a, "--cap-add", "CAP_CHOWN", "--cap-add", "CAP_FOWNER", "--cap-add", "CAP_FSETID", "--cap-add", "CAP_DAC_OVERRIDE")
	}
	a = append(a,
		"--uid", "0", "--gid", "0",
		"--hostname", "strata",
		"--json-status-fd", strconv.Itoa(fds.status),
	)
	if fds.seccomp > 0 {
		a = append(a, "--seccomp", strconv.Itoa(fds.seccomp))
	}
	if fds.block > 0 {
		a = append(a, "--block-fd", strconv.Itoa(fds.block))
	}
	if spec.Chroot {
		a = append(a, "--bind", tree, "/")
	} else {
		root, err := rootArgs(spec.Root)
		if err != nil {
			return nil, err
		}
		a = append(a, root...)
	}
	if spec.Network && hasResolvConf(spec, tree) {
		a = append(a, "--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf")
	}
	a = append(a, "--proc", "/proc", "--dev", "/dev")
	tmpSize := spec.TmpSize
	if tmpSize == 0 {
		tmpSize = DefaultTmpSize()
	}
	a = append(a, "--size", strconv.FormatInt(tmpSize, 10), "--tmpfs", "/tmp", "--tmpfs", "/run", "--dir", "/run/strata")
	if !spec.Chroot {
		a = append(a, "--bind", tree, TreePath)
	}
	if inputs != "" {
		a = append(a, "--ro-bind", inputs, InputsPath)
	} else {
		a = append(a, "--dir", InputsPath)
		for _, n := range slices.Sorted(maps.Keys(spec.Inputs)) {
			link, err := inputLink(spec.Inputs[n])
			if err != nil {
				return nil, fmt.Errorf("sandbox: input %s: %w", n, err)
			}
			if link != "" {
				a = append(a, "--symlink", link, InputsPath+"/"+n)
				continue
			}
			a = append(a, "--ro-bind", spec.Inputs[n], InputsPath+"/"+n)
		}
	}
	if len(spec.Outputs) > 0 {
		a = append(a, "--dir", OutputsPath)
		outs := make([]string, 0, len(spec.Outputs))
		for n := range spec.Outputs {
			outs = append(outs, n)
		}
		sort.Strings(outs)
		for _, n := range outs {
			a = append(a, "--ro-bind", spec.Outputs[n], OutputsPath+"/"+n)
		}
	}
	for _, b := range spec.Binds {
		if b.Writable {
			a = append(a, "--bind", b.Source, b.Target)
		} else {
			a = append(a, "--ro-bind", b.Source, b.Target)
		}
	}
	a = append(a, "--ro-bind-data", strconv.Itoa(fds.options), OptionsPath)
	if spec.Binary != "" {
		a = append(a, "--ro-bind", spec.Binary, BinaryPath)
	}
	a = append(a, "--remount-ro", "/run")
	if !spec.Chroot {
		a = append(a, "--remount-ro", "/", "--chdir", TreePath)
	} else {
		a = append(a, "--chdir", "/")
	}
	a = append(a, "--clearenv")
	for _, kv := range environ(spec) {
		a = append(a, "--setenv", kv[0], kv[1])
	}
	a = append(a, "--")
	a = append(a, spec.Command...)
	return a, nil
}

// environ returns the stage environment as sorted name/value pairs.
func environ(spec *Spec) [][2]string {
	env := map[string]string{
		"PATH":              DefaultPath,
		"HOME":              DefaultHome,
		"SOURCE_DATE_EPOCH": strconv.FormatInt(spec.SourceDateEpoch, 10),
	}
	for k, v := range spec.Env {
		env[k] = v
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][2]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, [2]string{k, env[k]})
	}
	return out
}

// rootArgs binds the build root's top-level entries (or the host allow-list)
// read-only onto bwrap's tmpfs root, which is remounted read-only at the end.
// This way the root needs no /proc, /dev, /tmp or /run mount points.
func rootArgs(root string) ([]string, error) {
	var a []string
	if root == HostRoot {
		for _, n := range hostRootDirs {
			e, err := entryArgs("/"+n, "/"+n)
			if err != nil {
				return nil, err
			}
			a = append(a, e...)
		}
		a = append(a, "--dir", "/etc")
		for _, n := range hostEtc {
			if _, err := os.Stat("/etc/" + n); err == nil {
				a = append(a, "--ro-bind", "/etc/"+n, "/etc/"+n)
			}
		}
		return a, nil
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("sandbox: read build root: %w", err)
	}
	for _, ent := range ents {
		if replacedTopLevel[ent.Name()] {
			continue
		}
		e, err := entryArgs(filepath.Join(root, ent.Name()), "/"+ent.Name())
		if err != nil {
			return nil, err
		}
		a = append(a, e...)
	}
	return a, nil
}

// entryArgs mirrors one top-level entry: a symlink as a symlink, a directory
// or regular file as a read-only bind. Missing and special entries are skipped.
func entryArgs(src, dst string) ([]string, error) {
	fi, err := os.Lstat(src)
	switch {
	case os.IsNotExist(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("sandbox: build root: %w", err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return nil, fmt.Errorf("sandbox: build root: %w", err)
		}
		return []string{"--symlink", target, dst}, nil
	case fi.IsDir(), fi.Mode().IsRegular():
		return []string{"--ro-bind", src, dst}, nil
	}
	return nil, nil
}

// hasResolvConf reports whether the sandbox's / has an /etc/resolv.conf to
// mount the host's over (bwrap cannot create it in a read-only root, and in
// chroot mode creating it would add a file to the tree).
func hasResolvConf(spec *Spec, tree string) bool {
	var dirs []string
	switch {
	case spec.Chroot && spec.Tree != "":
		dirs = []string{tree}
	case spec.Chroot:
		dirs = append([]string{spec.Upper}, spec.Lower...)
	case spec.Root == HostRoot:
		return true // /etc is bwrap's tmpfs directory: bwrap creates the file.
	default:
		dirs = []string{spec.Root}
	}
	for _, d := range dirs {
		if fi, err := os.Lstat(filepath.Join(d, "etc", "resolv.conf")); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// chrootMountPoints are the directories bwrap mounts over in a chrooted tree,
// creating them when the tree lacks them.
var chrootMountPoints = []string{"dev", "proc", "run", "tmp"}

// missingMountPoints returns the chrootMountPoints the tree of spec does not
// have before the run (in Tree, or in Upper and every Lower).
func missingMountPoints(spec *Spec) []string {
	dirs := []string{spec.Tree}
	if spec.Tree == "" {
		dirs = append([]string{spec.Upper}, spec.Lower...)
	}
	var missing []string
	for _, name := range chrootMountPoints {
		found := false
		for _, d := range dirs {
			if _, err := os.Lstat(filepath.Join(d, name)); err == nil {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, name)
		}
	}
	return missing
}

// removeMountPoints removes the empty directories bwrap created for names, so
// that a chrooted stage leaves only what it wrote in the tree.
func removeMountPoints(spec *Spec, names []string) error {
	dir := spec.Tree
	if dir == "" {
		dir = spec.Upper
	}
	for _, name := range names {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("sandbox: remove the mount point bwrap made: %w", err)
		}
	}
	return nil
}

// inputLink returns the target of an input that is a symbolic link (a path
// source naming a link, say), "" for anything else. Such an input is made a
// link in the sandbox, resolved there: a bind mount would follow it on the
// host, and a source "lnk -> /etc/shadow" put the host's file in the image.
func inputLink(src string) (string, error) {
	fi, err := os.Lstat(src)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrSetup, err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return "", nil
	}
	return os.Readlink(src)
}
