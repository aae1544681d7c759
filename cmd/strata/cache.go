package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/internal/units"
)

func newCacheCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache ls|gc|verify",
		Short: "Inspect and maintain the store",
		Long: `cache works on the store (--cache-dir, else $STRATA_CACHE_DIR, else
$XDG_CACHE_HOME/strata): ls lists the action cache entries and what state
directories (the compile cache, the sandbox's probe results) hold, gc drops the
least recently used entries (and logs of failed builds, and explain's records)
until the store fits --max-size and removes everything no entry refers to and no
running build holds, without waiting for builds, verify re-hashes every object,
moves bad ones aside and drops the entries that use them (exit 1 when it found
anything).`,
		Args: args(cobra.NoArgs),
	}
	cmd.AddCommand(newCacheLsCmd(g), newCacheGCCmd(g), newCacheVerifyCmd(g))
	return cmd
}

func newCacheLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the action cache entries, most recently used first",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := g.existingStore()
			if err != nil {
				return err
			}
			infos, err := st.List(cmd.Context())
			if err != nil {
				return err
			}
			state, err := st.StateUsage(cmd.Context())
			if err != nil {
				return err
			}
			type entry struct {
				Key      string    `json:"key"`
				Name     string    `json:"name,omitempty"`
				Size     int64     `json:"size"`
				LastUsed time.Time `json:"last_used"`
				Tree     string    `json:"tree,omitempty"`
				Outputs  any       `json:"outputs,omitempty"`
			}
			var out []entry
			var total int64
			for _, in := range infos {
				var m struct {
					Name string `json:"name"`
				}
				_ = json.Unmarshal(in.Meta, &m)
				out = append(out, entry{Key: in.Key, Name: m.Name, Size: in.Size, LastUsed: in.LastUsed, Tree: string(in.Tree), Outputs: in.Outputs})
				total += in.Size
			}
			if g.json() {
				if out == nil {
					out = []entry{}
				}
				return writeJSON(g.stdout, map[string]any{"ok": true, "dir": g.storeDir(), "entries": out, "state": state})
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tSIZE\tLAST USED\tNAME")
			for _, e := range out {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Key[:min(12, len(e.Key))], units.Bytes(e.Size), e.LastUsed.Format(time.DateTime), e.Name)
			}
			tw.Flush()
			fmt.Fprintf(g.stderr, "%d entries, %s referenced, store %s\n", len(out), units.Bytes(total), g.storeDir())
			if len(state) > 0 {
				var parts []string
				for _, name := range slices.Sorted(maps.Keys(state)) {
					parts = append(parts, name+" "+units.Bytes(state[name]))
				}
				fmt.Fprintf(g.stderr, "state: %s\n", strings.Join(parts, ", "))
			}
			return nil
		},
	}
}

func newCacheGCCmd(g *globals) *cobra.Command {
	var maxSize string
	cmd := &cobra.Command{
		Use:   "gc [--max-size SIZE]",
		Short: "Drop least recently used entries until the store fits SIZE, and unreferenced objects",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			max := int64(-1)
			if maxSize != "" {
				n, err := parseSize(maxSize)
				if err != nil {
					return &usageError{fmt.Errorf("--max-size: %w", err)}
				}
				max = n
			}
			st, err := g.existingStore()
			if err != nil {
				return err
			}
			stats, err := st.GC(cmd.Context(), max)
			if err != nil {
				return signalExit(cmd.Context(), err)
			}
			if g.json() {
				return writeJSON(g.stdout, map[string]any{"ok": true, "bytes_before": stats.BytesBefore, "bytes_after": stats.BytesAfter,
					"actions_removed": stats.ActionsRemoved, "failures_removed": stats.FailuresRemoved, "weak_removed": stats.WeakRemoved,
					"blobs_removed": stats.BlobsRemoved, "files_removed": stats.FilesRemoved, "checkouts_removed": stats.CheckoutsRemoved})
			}
			fmt.Fprintf(g.stdout, "%s → %s: removed %d entries, %d failure records, %d weak records, %d blobs, %d file objects, %d checkouts\n",
				units.Bytes(stats.BytesBefore), units.Bytes(stats.BytesAfter), stats.ActionsRemoved, stats.FailuresRemoved, stats.WeakRemoved,
				stats.BlobsRemoved, stats.FilesRemoved, stats.CheckoutsRemoved)
			return nil
		},
	}
	cmd.Flags().StringVar(&maxSize, "max-size", "", "target store size, e.g. 10G or 500M (default: only remove unreferenced objects)")
	return cmd
}

func newCacheVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Re-hash every object; quarantine bad ones and drop the entries that use them",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := g.existingStore()
			if err != nil {
				return err
			}
			rep, err := st.Verify(cmd.Context())
			if err != nil {
				return signalExit(cmd.Context(), err)
			}
			if g.json() {
				writeJSON(g.stdout, map[string]any{"ok": rep.OK(), "report": rep})
			} else {
				fmt.Fprintf(g.stdout, "checked %d blobs, %d file objects, %s\n", rep.Blobs, rep.Files, units.Bytes(rep.Bytes))
				for _, c := range rep.Corrupt {
					fmt.Fprintf(g.stdout, "corrupt: %s\n", c)
				}
				for _, k := range rep.DroppedActions {
					fmt.Fprintf(g.stdout, "dropped entry: %s\n", k)
				}
				for _, d := range rep.RemovedCheckouts {
					fmt.Fprintf(g.stdout, "removed checkout: %s\n", d)
				}
				if rep.OK() {
					fmt.Fprintln(g.stdout, "store is clean")
				}
			}
			if !rep.OK() {
				return &reportedError{code: exitFailed, err: fmt.Errorf("store %s: %d corrupt objects", g.storeDir(), len(rep.Corrupt))}
			}
			return nil
		},
	}
}

// parseSize parses "10G", "500M", "1.5GiB", "4096" (bytes; K, M, G, T are
// powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 10G, 500M, 4096)", s)
	}
	return int64(f * float64(mult)), nil
}

// existingStore opens the store for a command that looks at what it holds:
// a store that is not there is an error, where opening it would make an
// empty one and report it clean (a mistyped --cache-dir looked like a
// success).
func (g *globals) existingStore() (*store.Store, error) {
	dir := g.storeDir()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, &usageError{fmt.Errorf("no store at %s: nothing was built with this --cache-dir", dir)}
	}
	return g.openStore()
}
