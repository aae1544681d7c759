package builtin

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// debootstrapOptions are the options of strata.debootstrap:
//
//	{"suite": "bookworm", "mirror": "http://deb.debian.org/debian",
//	 "variant": "minbase", "include": [], "components": ["main"], "arch": ""}
//
// suite defaults to "bookworm", mirror to "http://deb.debian.org/debian"
// (http, https or file), variant to "minbase", include (extra packages) to
// [], components to ["main"], and arch to "" (mmdebstrap's default, the
// build root's native architecture).
type debootstrapOptions struct {
	Suite      string   `json:"suite"`
	Mirror     string   `json:"mirror"`
	Variant    string   `json:"variant"`
	Include    []string `json:"include"`
	Components []string `json:"components"`
	Arch       string   `json:"arch"`
}

// buildRootPath is searched for mmdebstrap and given to it as PATH.
const buildRootPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var (
	debSuite     = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]*$`) })
	debPackage   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$`) })
	debComponent = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9/_.-]*$`) })
	debArch      = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`) })
	debVariants  = []string{"extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important", "debootstrap", "standard"}
)

func (o *debootstrapOptions) defaults() {
	if o.Suite == "" {
		o.Suite = "bookworm"
	}
	if o.Mirror == "" {
		o.Mirror = "http://deb.debian.org/debian"
	}
	if o.Variant == "" {
		o.Variant = "minbase"
	}
	if len(o.Components) == 0 {
		o.Components = []string{"main"}
	}
}

func (o *debootstrapOptions) validate() error {
	if !debSuite().MatchString(o.Suite) {
		return fmt.Errorf("suite: %q is not a suite name", o.Suite)
	}
	u, err := url.Parse(o.Mirror)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") || strings.ContainsAny(o.Mirror, " \t\n") {
		return fmt.Errorf("mirror: %q is not an http, https or file URL", o.Mirror)
	}
	valid := false
	for _, v := range debVariants {
		valid = valid || v == o.Variant
	}
	if !valid {
		return fmt.Errorf("variant: %q is not one of %s", o.Variant, strings.Join(debVariants, ", "))
	}
	for i, p := range o.Include {
		if !debPackage().MatchString(p) {
			return fmt.Errorf("include[%d]: %q is not a package name", i, p)
		}
	}
	for i, c := range o.Components {
		if !debComponent().MatchString(c) {
			return fmt.Errorf("components[%d]: %q is not a component name", i, c)
		}
	}
	if o.Arch != "" && !debArch().MatchString(o.Arch) {
		return fmt.Errorf("arch: %q is not an architecture name", o.Arch)
	}
	return nil
}

// debootstrapArgv returns the mmdebstrap command line for tree.
//
// It uses --mode=root: the stage runs as uid 0 of the sandbox's user
// namespace with the tree writable, which is what root mode needs (it mounts
// /proc, /sys and /dev in the tree, which a user namespace with its own mount
// namespace permits). --mode=unshare would nest a second user namespace and
// needs newuidmap and subordinate ids inside the sandbox; fakechroot and
// fakeroot need those tools in the build root and record fake owners. The
// sandbox must map the ids the packages use (such as _apt), as for any tree.
// mmdebstrap refuses a non-empty target, so this is the first stage of an
// image.
func debootstrapArgv(o debootstrapOptions, tree string) []string {
	argv := []string{"mmdebstrap", "--mode=root", "--format=directory", "--variant=" + o.Variant}
	if len(o.Include) > 0 {
		argv = append(argv, "--include="+strings.Join(o.Include, ","))
	}
	argv = append(argv, "--components="+strings.Join(o.Components, ","))
	if o.Arch != "" {
		argv = append(argv, "--architectures="+o.Arch)
	}
	return append(argv, o.Suite, tree, o.Mirror)
}

// debootstrapEnv is the environment mmdebstrap runs with.
func debootstrapEnv(epoch int64) []string {
	return []string{
		"PATH=" + buildRootPath,
		"LC_ALL=C.UTF-8",
		"SOURCE_DATE_EPOCH=" + strconv.FormatInt(epoch, 10),
	}
}

// lookBuildRoot finds name in buildRootPath.
func lookBuildRoot(name string) (string, error) {
	for _, dir := range filepath.SplitList(buildRootPath) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed in the build root (searched %s); use a build root image that has it", name, buildRootPath)
}

func runDebootstrap(ctx context.Context, options []byte, env Env) error {
	var o debootstrapOptions
	if err := decode(options, &o); err != nil {
		return err
	}
	o.defaults()
	if err := o.validate(); err != nil {
		return err
	}
	bin, err := lookBuildRoot("mmdebstrap")
	if err != nil {
		return err
	}
	argv := debootstrapArgv(o, env.Tree)
	cmd := exec.CommandContext(ctx, bin, argv[1:]...)
	cmd.Env = debootstrapEnv(env.SourceDateEpoch)
	cmd.Stdout, cmd.Stderr = env.Stdout, env.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("mmdebstrap %s: exit status %d", o.Suite, ee.ExitCode())
		}
		return fmt.Errorf("mmdebstrap: %w", err)
	}
	return nil
}
