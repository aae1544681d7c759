package executor

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/executor/sandbox"
)

// ErrMissingCapability is wrapped when a node needs what this host lacks.
var ErrMissingCapability = errors.New("this host lacks what the node requires")

// Capabilities is what a host offers nodes (the OBS worker's idea of its
// capabilities): the architectures it runs, natively or under qemu-user, and
// its features.
type Capabilities struct {
	// Arch is the native architecture (GOARCH names: amd64, arm64, ...).
	Arch string `json:"arch"`
	// Emulated are the architectures qemu-user runs through binfmt_misc,
	// with the fix-binary flag a sandbox needs.
	Emulated []string `json:"emulated,omitempty"`
	// Features are "kvm" (a usable /dev/kvm), "network", and "privileged"
	// (strata runs as root).
	Features []string `json:"features"`
}

// qemuArch maps qemu's architecture names to Go's.
var qemuArch = map[string]string{
	"x86_64": "amd64", "aarch64": "arm64", "arm": "arm", "i386": "386", "riscv64": "riscv64",
	"ppc64le": "ppc64le", "s390x": "s390x", "mips64el": "mips64le", "loongarch64": "loong64",
}

// HostCapabilities returns what h offers.
func HostCapabilities(h *sandbox.Host) Capabilities {
	c := Capabilities{Arch: runtime.GOARCH, Features: []string{"network"}}
	for _, b := range h.Binfmt {
		if a, ok := qemuArch[b.Arch]; ok && b.Enabled && strings.Contains(b.Flags, "F") && a != c.Arch {
			c.Emulated = append(c.Emulated, a)
		}
	}
	if h.KVM && h.KVMAccess {
		c.Features = append(c.Features, "kvm")
	}
	if h.Root {
		c.Features = append(c.Features, "privileged")
	}
	slices.Sort(c.Emulated)
	slices.Sort(c.Features)
	return c
}

// missing says what of r c lacks; "" when nothing.
func (c Capabilities) missing(r *plan.Capabilities) string {
	var out []string
	if r.Arch != "" && r.Arch != c.Arch && !slices.Contains(c.Emulated, r.Arch) {
		out = append(out, fmt.Sprintf("arch %s (this host is %s%s; a foreign arch runs under qemu-user: Debian's qemu-user-static registers it with binfmt_misc)",
			r.Arch, c.Arch, emulatedNote(c.Emulated)))
	}
	for _, f := range r.Features {
		if !slices.Contains(c.Features, f) {
			switch f {
			case "kvm":
				out = append(out, "kvm (no usable /dev/kvm)")
			case "privileged":
				out = append(out, "privileged (strata does not run as root)")
			default:
				out = append(out, f)
			}
		}
	}
	return strings.Join(out, ", ")
}

func emulatedNote(e []string) string {
	if len(e) == 0 {
		return ", with no qemu-user binfmt entries"
	}
	return ", emulating " + strings.Join(e, ", ")
}

// goOnly are the built-in stages that run no program of the build root or the
// tree: they need no emulation of the image's arch. strata.busybox runs the
// busybox it installs; strata.debootstrap, mmdebstrap.
var goOnly = map[string]bool{
	"strata.files": true, "strata.copy": true, "strata.extract": true, "strata.users": true, "strata.hostname": true,
}

// checkCapabilities refuses the build before any node runs when a node among
// ids requires what c lacks; the error names every such node.
func checkCapabilities(p *plan.Plan, ids []string, names map[string]string, c Capabilities) error {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var failed []*NodeError
	for _, n := range p.Nodes {
		if !want[n.ID] || n.Requires == nil {
			continue
		}
		r := *n.Requires
		if n.Kind == plan.KindStage && goOnly[n.Type] {
			r.Arch = "" // Go code of the host's arch, whatever the image's
		}
		if m := c.missing(&r); m != "" {
			name := n.Name
			if d, ok := names[n.ID]; ok {
				name = d
			}
			failed = append(failed, &NodeError{Node: name, ID: n.ID, Origin: n.Origin, ExitCode: -1,
				Err: fmt.Errorf("%w: %s", ErrMissingCapability, m)})
		}
	}
	if len(failed) > 0 {
		return &BuildError{Failed: failed}
	}
	return nil
}

// needsCapabilities reports whether a node among ids requires anything.
func needsCapabilities(p *plan.Plan, ids []string) bool {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for _, n := range p.Nodes {
		if want[n.ID] && n.Requires != nil {
			return true
		}
	}
	return false
}
