package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-build/strata/executor"
	"github.com/strata-build/strata/executor/store"
	"github.com/strata-build/strata/internal/units"
	"github.com/strata-build/strata/registry"
)

// registryFlags are the flags of every command that reaches a registry.
type registryFlags struct {
	plainHTTP bool
}

func (f *registryFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.plainHTTP, "plain-http", false, "reach registries over plain HTTP (loopback registries always are)")
}

// newClient opens the store and a registry client over it that reports
// progress through a transferRenderer; done ends the renderer (run closes
// the store).
func (g *globals) newClient(ctx context.Context, opts registry.Options) (c *registry.Client, st *store.Store, done func(), r *transferRenderer, err error) {
	if st, err = g.openStore(); err != nil {
		return nil, nil, nil, nil, err
	}
	r = newTransferRenderer(g)
	opts.Events = r.event
	opts.UserAgent = "strata/" + strataVersion()
	if c, err = registry.New(st, opts); err != nil {
		return nil, nil, nil, nil, err
	}
	return c, st, r.close, r, nil
}

type pushFlags struct {
	registryFlags
	registry string
	to       string
	jobs     int
}

func newPushCmd(g *globals) *cobra.Command {
	var f pushFlags
	cmd := &cobra.Command{
		Use:   "push [plan.json|DIR] [IMAGE...] [--registry HOST/PATH] [--to REF]",
		Short: "Publish images as OCI artifacts",
		Long: `push builds what is not built yet and publishes images: each image's outputs
become one strata artifact manifest for its platform (an oci output also becomes
an ordinary container image beside it), grouped with the other variants of the
version in an image index tagged with the version and the publish: tags.

Without IMAGE, every image with publish: in the spec is pushed. An image goes to
its publish: repository, under --registry HOST/PATH when given, else into the
local OCI layout in the store; --to REF sends every image named to REF instead
(publish: not needed). Blobs the repository has are not sent again; tags are
set only once everything they reach is there. Credentials come from the docker
config (~/.docker/config.json) and its credential helpers.

Prints one line per tag: the reference and the index digest. With --output json
stdout holds {ok, published, build} and progress events are JSON lines on stderr.`,
		Example: `  strata push                                     # every image with publish:, into the local layout
  strata push --registry localhost:5000           # under a registry
  strata -C examples/fleet push fleet-x86-nuc --registry registry.example.com/acme
  strata push minimal --to localhost:5000/test/minimal:dev
  strata --output json push | jq -r '.published[].index'`,
		RunE: func(cmd *cobra.Command, a []string) error { return runPush(cmd.Context(), g, f, a) },
	}
	f.registryFlags.add(cmd)
	cmd.Flags().StringVar(&f.registry, "registry", "", "registry HOST[/PATH] that publish: repositories go under (default: the local OCI layout)")
	cmd.Flags().StringVar(&f.to, "to", "", "push the images to this reference instead of their publish: repository")
	cmd.Flags().IntVarP(&f.jobs, "jobs", "j", 0, "nodes to build at once; 0 means one per CPU")
	return cmd
}

func runPush(ctx context.Context, g *globals, f pushFlags, args []string) error {
	g.building = true
	started := time.Now()
	v, names, err := g.loadPlan(ctx, args)
	if err != nil {
		return err
	}
	if f.jobs < 0 {
		return &usageError{errJobs}
	}
	p := v.Plan()
	if f.to != "" {
		if _, err := registry.ParseRef(f.to); err != nil {
			return &usageError{fmt.Errorf("--to: %w", err)}
		}
	}
	if f.registry != "" {
		if _, err := registry.ParseRef(f.registry + "/x"); err != nil {
			return &usageError{fmt.Errorf("--registry %q: want HOST[:PORT][/PATH]", f.registry)}
		}
	}
	if len(names) == 0 {
		for _, name := range slices.Sorted(maps.Keys(p.Images)) {
			if p.Images[name].Publish != "" || f.to != "" {
				names = append(names, name)
			}
		}
		if len(names) == 0 {
			return &usageError{errors.New("push: no image has publish: in the spec; name images and give --to REF")}
		}
	}
	var targets, direct []string
	for _, n := range names {
		name := strings.TrimPrefix(n, "images.")
		img, ok := p.Images[name]
		if !ok {
			return &usageError{fmt.Errorf("push: %q is not an image (%s)%s", n, strings.Join(slices.Sorted(maps.Keys(p.Images)), ", "), didYouMean(name, slices.Sorted(maps.Keys(p.Images))))}
		}
		if img.Publish == "" {
			if f.to == "" {
				return &usageError{fmt.Errorf("push: image %s has no publish: in the spec; give --to REF", name)}
			}
			direct = append(direct, name)
		}
		targets = append(targets, "images."+name)
	}
	src, rev := registry.GitInfo(ctx, g.dir)
	c, st, done, tr, err := g.newClient(ctx, registry.Options{Registry: f.registry, PlainHTTP: f.plainHTTP, Source: src, Revision: rev})
	if err != nil {
		return err
	}
	defer done()
	if err := c.PublishTo(f.to); err != nil {
		return &usageError{err}
	}
	bin, err := strataBinary()
	if err != nil {
		return err
	}
	br := newRenderer(g)
	res, err := executor.Build(ctx, v, executor.Options{
		Store: st, Binary: bin, Jobs: f.jobs, Targets: targets, Workspace: g.dir, Events: br.event, Publisher: c,
	})
	br.close()
	if err == nil {
		for _, name := range direct {
			req, rerr := registry.RequestFromBuild(p, name, res, st)
			if rerr == nil {
				_, rerr = c.Publish(ctx, req)
			}
			if rerr != nil {
				err = rerr
				break
			}
		}
	}
	tr.close()
	pubs := c.Published()
	if g.json() {
		doc := map[string]any{"ok": err == nil, "published": pubs, "build": res, "elapsed": executor.Duration(time.Since(started))}
		if err != nil {
			doc["error"] = err.Error()
		}
		if werr := writeJSON(g.stdout, doc); werr != nil {
			return werr
		}
	} else {
		for _, pb := range pubs {
			for _, tag := range pb.Tags {
				note := ""
				if pb.Identical {
					note = "\tidentical: nothing published"
				}
				fmt.Fprintf(g.stdout, "%s:%s\t%s%s\n", terminalSafe(pb.Repository), terminalSafe(tag), pb.Index, note)
			}
		}
		if err != nil {
			fmt.Fprintln(g.stderr, "strata: "+terminalSafeLines(err.Error()))
		}
	}
	return alreadyReported(ctx, err)
}

func imageNamesOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func newVersionsCmd(g *globals) *cobra.Command {
	var f registryFlags
	cmd := &cobra.Command{
		Use:   "versions REPO",
		Short: "List the versions of a repository",
		Long: `versions prints the history of a repository: every version, newest first, with
the device types and platforms its variants offer, its tags and when it was
created; the default version (the newest marked default: true, else the newest)
is marked with *. REPO is a repository of the local OCI layout (fleet/x86-nuc)
or of a registry (localhost:5000/fleet/x86-nuc). With --output json:
{ok, repository, default, versions: [...]}.`,
		Example: `  strata versions fleet/x86-nuc
  strata versions localhost:5000/fleet/x86-nuc
  strata --output json versions localhost:5000/fleet/x86-nuc | jq -r .default`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			if _, err := registry.ParseRef(a[0]); err != nil {
				return &usageError{err}
			}
			c, _, done, _, err := g.newClient(ctx, registry.Options{PlainHTTP: f.plainHTTP})
			if err != nil {
				return err
			}
			defer done()
			h, err := c.Versions(ctx, a[0])
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(g.stdout, struct {
					OK bool `json:"ok"`
					*registry.History
				}{true, h})
			}
			if len(h.Versions) == 0 {
				fmt.Fprintf(g.stderr, "strata: %s has no versions\n", terminalSafe(h.Repository))
				return nil
			}
			for _, v := range h.Versions {
				mark := " "
				if v.Default {
					mark = "*"
				}
				fmt.Fprintf(g.stdout, "%s %-12s %-20s %-30s %-24s %s\n", mark, terminalSafe(v.Version), terminalSafe(v.Created),
					terminalSafe(strings.Join(v.DeviceTypes, ",")), terminalSafe(strings.Join(v.Tags, ",")), v.Digest)
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

type pullFlags struct {
	registryFlags
	deviceType string
	platform   string
	outDir     string
}

func newPullCmd(g *globals) *cobra.Command {
	var f pullFlags
	cmd := &cobra.Command{
		Use:   "pull REF [--device-type T] [--platform OS/ARCH] [-o DIR]",
		Short: "Fetch an image, verified, and print its local paths",
		Long: `pull resolves REF to a digest once (a repository without a tag means its default
version), picks the variant for --device-type (most specific first:
raspberry-pi/3b before raspberry-pi) and --platform, fetches every blob into
the local OCI layout in the store, checking each one's size and digest as it
streams, and prints the local path and digest of every file. Nothing is kept
or tagged unless all of it verified.

Without -o the paths are inside the store's OCI layout and must only be read;
-o DIR copies the files there under their names (an oci output as an OCI layout
directory). With --output json: {ok, version, device_types, digest, files:
[{name, path, digest, size, media_type}], container, ...} for scripts.`,
		Example: `  strata pull localhost:5000/fleet/x86-nuc --device-type x86/nuc
  strata pull fleet/x86-nuc:2.1.0 -o ./image
  strata --output json pull localhost:5000/fleet/x86-nuc --device-type x86/nuc | jq -r '.files[].path'`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			if _, err := registry.ParseRef(a[0]); err != nil {
				return &usageError{err}
			}
			if err := checkPlatform(f.platform); err != nil {
				return err
			}
			c, _, done, _, err := g.newClient(ctx, registry.Options{PlainHTTP: f.plainHTTP})
			if err != nil {
				return err
			}
			defer done()
			p, err := c.Pull(ctx, a[0], registry.PullOptions{DeviceType: f.deviceType, Platform: f.platform, OutDir: f.outDir})
			if err != nil {
				return signalExit(ctx, err)
			}
			if g.json() {
				return writeJSON(g.stdout, struct {
					OK bool `json:"ok"`
					*registry.Pulled
				}{true, p})
			}
			for _, fl := range p.Files {
				fmt.Fprintf(g.stdout, "%s\t%s\n", terminalSafe(fl.Path), fl.Digest)
			}
			if p.Container != nil {
				fmt.Fprintf(g.stdout, "%s\t%s\n", terminalSafe(p.Container.Path), p.Container.Digest)
			}
			fmt.Fprintf(g.stderr, "strata: pulled %s %s (%s) as %s\n", terminalSafe(p.Image), terminalSafe(p.Version), p.Digest, terminalSafe(p.Reference))
			return nil
		},
	}
	f.registryFlags.add(cmd)
	cmd.Flags().StringVar(&f.deviceType, "device-type", "", "the device type to pull for")
	cmd.Flags().StringVar(&f.platform, "platform", "", "the platform to pull for, OS/ARCH")
	cmd.Flags().StringVarP(&f.outDir, "out", "o", "", "copy the files into this directory")
	return cmd
}

func checkPlatform(p string) error {
	if p == "" {
		return nil
	}
	if os, arch, ok := strings.Cut(p, "/"); !ok || os == "" || arch == "" || strings.Contains(arch, "/") {
		return &usageError{fmt.Errorf("--platform %q: want OS/ARCH, such as linux/amd64", p)}
	}
	return nil
}

type installFlags struct {
	pullFlags
	target    string
	downgrade bool
}

func newInstallCmd(g *globals) *cobra.Command {
	var f installFlags
	cmd := &cobra.Command{
		Use:   "install REF --device-type T --target DIR [--allow-downgrade]",
		Short: "Install an image into the inactive A/B slot of a device directory",
		Long: `install puts an image on a device the way RAUC and ostree do: DIR holds slots a
and b and a current link to the active one. REF is resolved to a digest once;
every blob is fetched and verified; the device type and, unless
--allow-downgrade, the version (not older than the installed one) are checked
before the inactive slot is touched; the files are written, hashed as they are
written, and synced into a staging directory that then replaces the inactive
slot; and current switches to it with one atomic rename. The previous slot is
kept: strata rollback switches back. Interrupted at any point, DIR holds the
old slot as current or the complete new one.`,
		Example: `  strata install localhost:5000/fleet/x86-nuc --device-type x86/nuc --target /srv/device
  strata install fleet/x86-nuc:2.0.0 --device-type x86/nuc --target ./dev --allow-downgrade
  strata --output json install fleet/x86-nuc --device-type x86/nuc --target ./dev`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			if _, err := registry.ParseRef(a[0]); err != nil {
				return &usageError{err}
			}
			if f.deviceType == "" || f.target == "" {
				return &usageError{errors.New("install: --device-type and --target are required")}
			}
			if err := checkPlatform(f.platform); err != nil {
				return err
			}
			c, _, done, _, err := g.newClient(ctx, registry.Options{PlainHTTP: f.plainHTTP})
			if err != nil {
				return err
			}
			defer done()
			in, err := c.Install(ctx, a[0], f.target, registry.InstallOptions{DeviceType: f.deviceType, Platform: f.platform, AllowDowngrade: f.downgrade})
			if err != nil {
				return signalExit(ctx, err)
			}
			return g.printInstalled("installed", in)
		},
	}
	f.registryFlags.add(cmd)
	cmd.Flags().StringVar(&f.deviceType, "device-type", "", "the device's type (required)")
	cmd.Flags().StringVar(&f.platform, "platform", "", "the platform to install for, OS/ARCH")
	cmd.Flags().StringVar(&f.target, "target", "", "the device directory with slots a and b (required)")
	cmd.Flags().BoolVar(&f.downgrade, "allow-downgrade", false, "install a version older than the installed one")
	return cmd
}

func newRollbackCmd(g *globals) *cobra.Command {
	var target string
	cmd := &cobra.Command{
		Use:   "rollback --target DIR",
		Short: "Switch a device directory back to its previous slot",
		Long: `rollback makes the other slot of DIR current again, after checking that it is
complete and that its files still match their digests; the slot it leaves is
kept, so a second rollback undoes the first.`,
		Example: `  strata rollback --target /srv/device
  strata --output json rollback --target ./dev`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, a []string) error {
			if target == "" {
				return &usageError{errors.New("rollback: --target is required")}
			}
			in, err := registry.Rollback(target)
			if err != nil {
				return err
			}
			return g.printInstalled("rolled back to", in)
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "the device directory (required)")
	return cmd
}

func (g *globals) printInstalled(what string, in *registry.Installed) error {
	if g.json() {
		return writeJSON(g.stdout, struct {
			OK bool `json:"ok"`
			*registry.Installed
		}{true, in})
	}
	fmt.Fprintf(g.stdout, "%s %s %s (%s) in slot %s of %s\n", what, terminalSafe(in.Current.Repository), terminalSafe(in.Current.Version),
		in.Current.Digest, in.Current.Slot, terminalSafe(in.Target))
	if in.Previous != nil {
		fmt.Fprintf(g.stdout, "previous: %s %s in slot %s\n", terminalSafe(in.Previous.Repository), terminalSafe(in.Previous.Version), in.Previous.Slot)
	}
	return nil
}

// transferRenderer shows registry progress: JSON lines on stderr with
// --output json, a live line per blob in flight on a terminal (bytes and
// rate), plain lines per finished blob otherwise.
type transferRenderer struct {
	g    *globals
	mode string
	w    io.Writer
	enc  *json.Encoder

	mu      sync.Mutex
	started map[string]time.Time
	bytes   map[string]registry.Event
	drawn   int
	last    time.Time
	closed  bool
}

func newTransferRenderer(g *globals) *transferRenderer {
	r := &transferRenderer{g: g, w: g.stderr, started: map[string]time.Time{}, bytes: map[string]registry.Event{}}
	switch {
	case g.json():
		r.mode = "json"
		r.enc = json.NewEncoder(g.stderr)
		r.enc.SetEscapeHTML(false)
	case !g.noProg && isTerminal(g.stderr):
		r.mode = "tty"
	default:
		r.mode = "plain"
	}
	return r
}

func (r *transferRenderer) event(ev registry.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode == "json" {
		r.enc.Encode(ev)
		return
	}
	key := ev.Repository + "@" + ev.Digest.String()
	name := ev.Title
	if name == "" {
		name = shortDigest(ev.Digest.String())
	}
	var line string
	switch ev.Kind {
	case registry.EventBlobStart:
		r.started[key] = ev.Time
		r.bytes[key] = ev
	case registry.EventBlobProgress:
		r.bytes[key] = ev
	case registry.EventBlobDone:
		el := ev.Time.Sub(r.started[key])
		delete(r.started, key)
		delete(r.bytes, key)
		line = fmt.Sprintf("blob    %s %s %s in %.2fs (%s)", terminalSafe(ev.Repository), terminalSafe(name), units.Bytes(ev.Size), el.Seconds(), rate(ev.Size, el))
	case registry.EventBlobExists:
		if !r.g.verbose {
			break
		}
		line = fmt.Sprintf("exists  %s %s %s", terminalSafe(ev.Repository), terminalSafe(name), units.Bytes(ev.Size))
	case registry.EventIdentical:
		line = "identical " + terminalSafe(ev.Message)
	case registry.EventBlobMounted:
		line = fmt.Sprintf("mounted %s %s %s", terminalSafe(ev.Repository), terminalSafe(name), terminalSafe(ev.Message))
	case registry.EventRetry:
		line = fmt.Sprintf("retry   %s %s: %s", terminalSafe(ev.Repository), terminalSafe(name), terminalSafe(ev.Message))
	case registry.EventFallback:
		line = fmt.Sprintf("note    %s refused the OCI 1.1 manifest form; using the 1.0 form from now on", terminalSafe(ev.Repository))
	case registry.EventTag:
		line = fmt.Sprintf("tag     %s:%s %s", terminalSafe(ev.Repository), terminalSafe(ev.Tag), shortDigest(ev.Digest.String()))
	}
	if r.mode == "plain" {
		if line != "" {
			fmt.Fprintln(r.w, line)
		}
		return
	}
	r.redraw(line, ev.Time)
}

// redraw prints a finished line above the live area and, at most every 100
// ms, redraws one line per blob in flight.
func (r *transferRenderer) redraw(line string, now time.Time) {
	if line == "" && now.Sub(r.last) < 100*time.Millisecond {
		return
	}
	r.last = now
	var b strings.Builder
	if r.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA\x1b[J", r.drawn)
	}
	if line != "" {
		b.WriteString(line + "\n")
	}
	r.drawn = 0
	keys := make([]string, 0, len(r.bytes))
	for k := range r.bytes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ev := r.bytes[k]
		name := ev.Title
		if name == "" {
			name = shortDigest(ev.Digest.String())
		}
		el := now.Sub(r.started[k])
		fmt.Fprintf(&b, "  %s %s / %s (%s)\n", clipRunes(terminalSafe(name), 40), units.Bytes(ev.Bytes), units.Bytes(ev.Size), rate(ev.Bytes, el))
		r.drawn++
	}
	io.WriteString(r.w, b.String())
}

func (r *transferRenderer) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode == "tty" && r.drawn > 0 && !r.closed {
		fmt.Fprintf(r.w, "\x1b[%dA\x1b[J", r.drawn)
		r.drawn = 0
	}
	r.closed = true
}

func shortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return d
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return units.Bytes(int64(float64(n)/d.Seconds())) + "/s"
}
