package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/sandbox"
)

func newDoctorCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Show what the host offers: sandbox, namespaces, overlayfs, qemu/binfmt, tools",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := sandbox.Detect(cmd.Context())
			if h == nil {
				return err
			}
			if g.json() {
				doc := map[string]any{"ok": err == nil, "host": h, "capabilities": executor.HostCapabilities(h)}
				if err != nil {
					doc["error"] = err.Error()
				}
				writeJSON(g.stdout, doc)
			} else {
				writeDoctor(g, h)
				if err != nil {
					fmt.Fprintf(g.stdout, "\nstrata cannot run stages here: %v\n", err)
				}
			}
			if err != nil {
				return &reportedError{code: exitFailed, err: err}
			}
			return nil
		},
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func writeDoctor(g *globals, h *sandbox.Host) {
	w := g.stdout
	bw := "not found"
	if h.Bwrap.Path != "" {
		bw = h.Bwrap.Path + " " + h.Bwrap.Version
	}
	fmt.Fprintf(w, "bwrap:            %s\n", bw)
	works := yesNo(h.BwrapWorks)
	if h.BwrapError != "" {
		works += " (" + h.BwrapError + ")"
	}
	fmt.Fprintf(w, "bwrap works:      %s\n", works)
	fmt.Fprintf(w, "running as root:  %s\n", yesNo(h.Root))
	fmt.Fprintf(w, "user namespaces:  %s\n", yesNo(h.UserNamespaces))
	ov := yesNo(h.Overlay)
	if h.OverlayError != "" {
		ov += " (" + h.OverlayError + ")"
	}
	fmt.Fprintf(w, "overlayfs:        %s\n", ov)
	switch {
	case h.Staging == sandbox.StagingCopy && h.Overlay:
		fmt.Fprintf(w, "staging:          copy, forced by %s=copy: every stage copies its input tree (O(tree))\n", sandbox.StagingEnv)
	case h.Staging == sandbox.StagingCopy:
		fmt.Fprintf(w, "staging:          copy — overlayfs is unavailable, so every stage copies its input tree (O(tree), slow for big trees)\n")
	default:
		fmt.Fprintf(w, "staging:          %s (copy-on-write, O(changes))\n", h.Staging)
	}
	if h.ProcessLimit != "" {
		fmt.Fprintf(w, "process limit:    %s (%d per stage)\n", h.ProcessLimit, sandbox.DefaultMaxProcs)
	} else {
		fmt.Fprintf(w, "process limit:    none — no writable pids cgroup; a fork bomb in a stage is not contained\n")
	}
	if h.MemoryLimit != "" {
		fmt.Fprintf(w, "memory limit:     %s (default half the RAM per stage)\n", h.MemoryLimit)
	} else {
		fmt.Fprintf(w, "memory limit:     none — no writable memory cgroup; only /tmp is bounded\n")
	}
	fmt.Fprintf(w, "seccomp filter:   %s\n", yesNo(h.Seccomp))
	var bf []string
	for _, b := range h.Binfmt {
		s := b.Arch
		if !b.Enabled {
			s += " (disabled)"
		}
		bf = append(bf, s)
	}
	if len(bf) == 0 {
		bf = []string{"none"}
	}
	fmt.Fprintf(w, "qemu binfmt:      %s\n", strings.Join(bf, ", "))
	kvm := yesNo(h.KVM)
	if h.KVM && !h.KVMAccess {
		kvm += " (no access)"
	}
	fmt.Fprintf(w, "kvm:              %s\n", kvm)
	fmt.Fprintf(w, "host fingerprint: %s\n", h.Fingerprint)
	c := executor.HostCapabilities(h)
	archs := c.Arch
	if len(c.Emulated) > 0 {
		archs += ", under qemu-user: " + strings.Join(c.Emulated, ", ")
	}
	fmt.Fprintf(w, "capabilities:     arch %s; features %s (what requires: may ask for)\n", archs, strings.Join(c.Features, ", "))
	fmt.Fprintln(w, "tools:")
	for _, t := range h.Tools {
		p := t.Path
		if p == "" {
			p = "missing"
		}
		fmt.Fprintf(w, "  %-12s %s %s\n", t.Name, p, t.Version)
	}
}
