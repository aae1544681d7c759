package compiler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/gowebpki/jcs"

	"github.com/strata-build/strata/compiler/plan"
	"github.com/strata-build/strata/lang"
)

// SourceDateEpoch is the timestamp every build sees: outputs are reproducible, so
// no wall-clock time may enter them.
const SourceDateEpoch = "0"

// Options configure a compile.
type Options struct {
	// Host is the fingerprint keyed into nodes whose build root is "host". The zero
	// value means the fingerprint of this machine (see plan.HostFingerprint).
	Host plan.Host
	// StrataVersion is recorded in the host fingerprint when Host is zero.
	StrataVersion string
}

// Compile lowers a workspace into a plan. The same workspace gives the same plan,
// wherever it lives on disk.
func Compile(ctx context.Context, ws *lang.Workspace, opts Options) (*plan.Plan, error) {
	host := opts.Host
	if host == (plan.Host{}) {
		host = plan.HostFingerprint(opts.StrataVersion)
	}
	c := &compiler{
		ws:   ws,
		host: host,
		p: &plan.Plan{
			Version: plan.Version,
			Host:    host,
			Images:  map[string]*plan.Image{},
			Stages:  map[string]*plan.Module{},
		},
		byName:   map[string]*plan.Node{},
		byID:     map[string]*plan.Node{},
		images:   map[string]ref{},
		hookRuns: map[string][]*plan.Node{},
	}
	mods, err := Modules(ws)
	if err != nil {
		return nil, err
	}
	c.modules = map[string]string{}
	for _, m := range mods {
		c.p.Stages[m.Name] = m
		c.modules[m.Name] = m.Digest
	}
	if err := c.sources(ctx); err != nil {
		return nil, err
	}
	order, err := c.imageOrder()
	if err != nil {
		return nil, err
	}
	for _, name := range order {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := c.image(ws.Images[name]); err != nil {
			return nil, err
		}
	}
	for _, a := range c.after {
		ids, err := c.hooks(a.img, a.outputs, "")
		if err != nil {
			return nil, err
		}
		a.pi.Hooks = append(a.pi.Hooks, ids...)
	}
	jobs, err := c.jobOrder()
	if err != nil {
		return nil, err
	}
	for _, name := range jobs {
		if err := c.job(ws.Jobs[name]); err != nil {
			return nil, err
		}
	}
	for _, name := range sortedKeys(ws.Images) {
		if err := c.publish(ws.Images[name]); err != nil {
			return nil, err
		}
	}
	c.nameHooks()
	if err := c.pending(); err != nil {
		return nil, err
	}
	return c.p, nil
}

// pending lists the templates that wait on a resource job (lang.Template.Pending):
// the plan holds the job, and says which of its nodes the instances wait on.
// Those expanded with the job's records are listed too (plan.Expansion).
func (c *compiler) pending() error {
	for _, name := range sortedKeys(c.ws.Templates) {
		t := c.ws.Templates[name]
		if t.Job != "" && !t.Pending {
			n := 0
			for _, r := range t.Records {
				n += len(r.Defines)
			}
			c.p.Expanded = append(c.p.Expanded, plan.Expansion{Template: name, Job: "jobs." + t.Job, Records: len(t.Records), Instances: n})
		}
		if !t.Pending {
			continue
		}
		job := c.byName["jobs."+t.Job]
		if job == nil {
			return fmt.Errorf("templates.%s waits on jobs.%s, which is not in the plan", name, t.Job)
		}
		c.p.Pending = append(c.p.Pending, plan.Pending{
			Template: name, Resource: t.Resource, Job: "jobs." + t.Job, Node: job.ID, Origin: t.Pos.String(),
		})
	}
	return nil
}

// nameHooks names a hook's node hooks.NAME (DESIGN §7) when every image that runs
// the hook runs the same node: one image, or the same work merged by key. The
// per-image names (images.IMG.hooks.NAME) stay as aliases, since they are how an
// image's hooks are found. A hook that runs as different work for several images
// (a post-build hook sees each image's own outputs) keeps one node per image under
// the per-image names, as hooks.NAME would not say which; so does a node that is the
// same work as another hook's. Names enter no key here:
// a hook is never another node's key input.
func (c *compiler) nameHooks() {
	// Two hooks doing the same work are one node; it is named after neither.
	hooksOf := map[*plan.Node]int{}
	for _, runs := range c.hookRuns {
		seen := map[*plan.Node]bool{}
		for _, n := range runs {
			if !seen[n] {
				seen[n] = true
				hooksOf[n]++
			}
		}
	}
	for _, hn := range sortedKeys(c.hookRuns) {
		runs := c.hookRuns[hn]
		n := runs[0]
		same := hooksOf[n] == 1
		for _, r := range runs[1:] {
			same = same && r == n
		}
		if !same {
			continue
		}
		n.Aliases = append([]plan.Alias{{Name: n.Name, Origin: n.Origin}}, n.Aliases...)
		n.Name = "hooks." + hn
	}
}

// ref is a node as a dependency: its strong key and the name the weak key uses.
type ref struct {
	id   string
	name string
}

type compiler struct {
	ws      *lang.Workspace
	host    plan.Host
	p       *plan.Plan
	byName  map[string]*plan.Node
	byID    map[string]*plan.Node
	images  map[string]ref // images.NAME → its final tree
	modules map[string]string
	// hookRuns lists, per hook name, the node of each image's run of the hook.
	hookRuns map[string][]*plan.Node
	// after are the images' post-build and pre-publish hooks, compiled once
	// every image is (afterHooks).
	after []afterHooks
}

// afterHooks are the hooks an image runs after its outputs: compiled after
// every image, since a hook's build root may be an image built from this one
// (a smoke-test image from the app, as the app's hook's build root).
type afterHooks struct {
	img     *lang.Image
	outputs []ref
	pi      *plan.Image
}

// dep is a node input with both of its identities.
type dep struct {
	tree      ref
	buildroot ref
	mounts    map[string]ref
	after     []ref
}

// add computes the node's keys from its own fields and deps, and appends it. The
// strong key is the plan's own function of the node (so the executor can
// recompute it); the weak key hashes the same document with dependency names.
func (c *compiler) add(n *plan.Node, d dep) error {
	n.Inputs = plan.Inputs{Tree: d.tree.id, BuildRoot: d.buildroot.id, Mounts: idMap(d.mounts)}
	if d.buildroot.name == plan.HostRoot {
		n.Inputs.BuildRoot = plan.HostRoot
	}
	for _, a := range d.after {
		n.Inputs.After = append(n.Inputs.After, a.id)
	}
	sb, err := n.StrongKeyInputs(c.host)
	if err != nil {
		return err
	}
	wb, err := n.KeyDocument(c.host, d.names())
	if err != nil {
		return err
	}
	n.ID, n.WeakKey = plan.Hash(sb), plan.Hash(wb)
	deps := map[string]bool{}
	for _, r := range d.all() {
		if r.id != "" && r.id != plan.HostRoot {
			deps[r.id] = true
		}
	}
	for _, existing := range n.Deps { // ordering-only dependencies set by the caller
		deps[existing] = true
	}
	n.Deps = sortedKeys(deps)
	if prev, dup := c.byName[n.Name]; dup {
		return fmt.Errorf("two nodes named %s (%s and %s)", n.Name, prev.Origin, n.Origin)
	}
	if same, dup := c.byID[n.ID]; dup {
		// The same work reached from another place: one node, another name.
		same.Aliases = append(same.Aliases, plan.Alias{Name: n.Name, Origin: n.Origin})
		same.Limits = mergeLimits(same.Limits, n.Limits)
		c.byName[n.Name] = same
		return nil
	}
	c.byName[n.Name] = n
	c.byID[n.ID] = n
	c.p.Nodes = append(c.p.Nodes, n)
	return nil
}

// names are the dependencies as the weak key sees them.
func (d dep) names() plan.KeyInputRefs {
	k := plan.KeyInputRefs{Tree: d.tree.name, BuildRoot: d.buildroot.name}
	if len(d.mounts) > 0 {
		k.Mounts = map[string]string{}
		for name, r := range d.mounts {
			k.Mounts[name] = r.name
		}
	}
	for _, a := range d.after {
		k.After = append(k.After, a.name)
	}
	return k
}

func (d dep) all() []ref {
	out := []ref{d.tree, d.buildroot}
	for _, r := range d.mounts {
		out = append(out, r)
	}
	return append(out, d.after...)
}

func idMap(m map[string]ref) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := map[string]string{}
	for k, r := range m {
		out[k] = r.id
	}
	return out
}

func canonical(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(b)
}

func hash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func keyOf(v any) (string, error) {
	b, err := canonical(v)
	if err != nil {
		return "", err
	}
	return hash(b), nil
}

func canonicalOptions(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	return jcs.Transform(raw)
}

func (c *compiler) sources(ctx context.Context) error {
	for _, name := range sortedKeys(c.ws.Sources) {
		s := c.ws.Sources[name]
		n := &plan.Node{Kind: plan.KindSource, Name: "sources." + name, Origin: s.Pos.String()}
		switch {
		case s.URL != "":
			n.Type = "url"
			n.Source = &plan.Source{URL: s.URL, SHA256: s.SHA256}
		case s.Git != "":
			n.Type = "git"
			n.Source = &plan.Source{Git: s.Git, Commit: s.Commit}
		default:
			n.Type = "path"
			d, err := plan.PathDigest(ctx, c.ws.Dir, s.Path)
			if err != nil {
				return lang.Errors{{Pos: s.Pos, Path: "sources." + name + ".path", Msg: err.Error()}}
			}
			n.Source = &plan.Source{Path: s.Path, Digest: d}
		}
		if err := c.add(n, dep{}); err != nil {
			return err
		}
	}
	return nil
}

// imageOrder lists images so that every image comes after the images its build
// depends on (lang has already rejected cycles); ties in name order.
func (c *compiler) imageOrder() ([]string, error) {
	return topoOrder(sortedKeys(c.ws.Images), func(name string) []string {
		var deps []string
		for _, d := range imageDeps(c.ws, c.ws.Images[name]) {
			if c.ws.Images[d] != nil {
				deps = append(deps, d)
			}
		}
		return deps
	})
}

// topoOrder orders names so each comes after its deps, visiting in the given
// order. A cycle is an error: lang refuses the ones a spec can make, and one
// that gets here anyway must not be broken silently (an image compiled before
// the one it is built from lost its from).
func topoOrder(names []string, deps func(string) []string) ([]string, error) {
	var out []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string) error
	visit = func(name string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("internal error: dependency cycle through %s", name)
		case 2:
			return nil
		}
		state[name] = 1
		for _, d := range deps(name) {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, name)
		return nil
	}
	for _, name := range names {
		if err := visit(name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func imageDeps(ws *lang.Workspace, img *lang.Image) []string {
	var out []string
	add := func(ref string) {
		if name, ok := strings.CutPrefix(ref, "images."); ok {
			out = append(out, name)
		}
	}
	add(img.BuildRoot)
	add(img.From)
	for _, st := range img.Stages {
		for _, in := range st.Inputs {
			add(in)
		}
		if m := ws.StageModules[st.Type]; m != nil {
			add(m.BuildRoot)
		}
	}
	// A pre-build hook's build root is compiled first too: the hook runs
	// before the image's stages. Other hooks are compiled after every image.
	for _, hn := range img.Hooks {
		if h := ws.Hooks[hn]; h != nil && h.On == "pre-build" && h.BuildRoot != "images."+img.Name {
			add(h.BuildRoot)
		}
	}
	sort.Strings(out)
	return out
}

func (c *compiler) buildRoot(name string) ref {
	if name == "" || name == plan.HostRoot {
		return ref{id: plan.HostRoot, name: plan.HostRoot}
	}
	return c.images[name]
}

func (c *compiler) image(img *lang.Image) error {
	prefix := "images." + img.Name
	platform := &plan.Platform{OS: img.Platform.OS, Arch: img.Platform.Arch}
	env := map[string]string{"SOURCE_DATE_EPOCH": SourceDateEpoch}
	var tree ref
	if img.From != "" {
		tree = c.images[img.From]
	}
	// Pre-build hooks are a step of the build, before any stage (the
	// executor's walker holds every other node until they are done), not
	// ordering edges of stages: an edge of a stage that turns out identical to
	// another image's would be lost when the two become one node.
	preBuild, err := c.hooks(img, nil, "pre-build")
	if err != nil {
		return err
	}
	hooks := preBuild
	for i, st := range img.Stages {
		br := img.BuildRoot
		if m := c.ws.StageModules[st.Type]; m != nil && m.BuildRoot != "" {
			br = m.BuildRoot
		}
		opts, err := canonicalOptions(st.Options)
		if err != nil {
			return fmt.Errorf("%s.stages[%d]: options: %w", prefix, i, err)
		}
		n := &plan.Node{
			Kind: plan.KindStage, Name: fmt.Sprintf("%s.stages[%d]", prefix, i), Type: st.Type,
			ModuleDigest: c.modules[st.Type], Options: opts, Command: st.Command,
			Network: st.Network, Platform: platform, Env: env, Requires: caps(img.Requires),
			Origin: st.Pos.String(), Limits: limits(st.Limits),
		}
		d := dep{tree: tree, buildroot: c.buildRoot(br)}
		if len(st.Inputs) > 0 {
			d.mounts = map[string]ref{}
			for name, in := range st.Inputs {
				if s, ok := strings.CutPrefix(in, "sources."); ok {
					src := c.byName["sources."+s]
					d.mounts[name] = ref{id: src.ID, name: src.Name}
				} else {
					d.mounts[name] = c.images[in]
				}
			}
		}
		if err := c.add(n, d); err != nil {
			return err
		}
		tree = ref{id: n.ID, name: n.Name}
	}
	// Other images refer to this one by its name, so appending a stage here leaves
	// their weak keys alone.
	c.images[prefix] = ref{id: tree.id, name: prefix}
	pi := &plan.Image{
		Name: img.Name, Version: img.Version, Platform: *platform, DeviceTypes: img.DeviceTypes,
		Default: img.Default, Tree: tree.id, Runtime: img.Runtime, Annotations: img.Annotations,
		Origin: img.Pos.String(),
	}
	c.p.Images[img.Name] = pi
	var outputs []ref
	for j, o := range img.Outputs {
		format, ok := plan.LookupOutput(o.Type)
		if !ok {
			return fmt.Errorf("%s.outputs[%d]: unknown output format %q", prefix, j, o.Type)
		}
		opts, err := canonical(outputOptions(img, o))
		if err != nil {
			return err
		}
		n := &plan.Node{
			Kind: plan.KindOutput, Name: fmt.Sprintf("%s.outputs[%d]", prefix, j), Type: o.Type,
			ModuleDigest: format.Digest(), Artifact: o.Name,
			Options: opts, Platform: platform, Env: env, Origin: o.Pos.String(),
		}
		if err := c.add(n, dep{tree: tree}); err != nil {
			return err
		}
		pi.Outputs = append(pi.Outputs, n.ID)
		outputs = append(outputs, ref{id: n.ID, name: n.Name})
	}
	pi.Hooks = hooks
	c.after = append(c.after, afterHooks{img: img, outputs: outputs, pi: pi})
	return nil
}

// outputOptions are an output node's options: its size as ever, the format's
// options, and for oci the image's version and annotations, which
// change the artifact and so belong in its key (executor/output.PlanOptions
// decodes them).
func outputOptions(img *lang.Image, o lang.Output) map[string]any {
	m := map[string]any{"size": o.Size}
	if o.Compression != "" {
		m["compression"] = o.Compression
	}
	if o.Label != "" {
		m["label"] = o.Label
	}
	if o.InodesExtra != 0 {
		m["inodes_extra"] = o.InodesExtra
	}
	if o.Type == "oci" {
		if img.Version != "" {
			m["version"] = img.Version
		}
		if len(img.Annotations) > 0 {
			m["annotations"] = img.Annotations
		}
		if o.Config != nil {
			m["config"] = o.Config
		}
	}
	return m
}

// hooks adds a node for each hook an image names that runs on the given event (or
// on any event but pre-build when on is empty) and returns their IDs. Hooks order
// the build but are not build inputs of the image, so they enter no stage's key.
func (c *compiler) hooks(img *lang.Image, outputs []ref, on string) ([]string, error) {
	prefix := "images." + img.Name
	var ids []string
	for _, hn := range img.Hooks {
		h := c.ws.Hooks[hn]
		if (on == "" && h.On == "pre-build") || (on != "" && h.On != on) {
			continue
		}
		n := &plan.Node{
			Kind: plan.KindHook, Name: prefix + ".hooks." + hn, Type: h.On, Command: h.Command,
			Env: hookEnv(img, outputs), Origin: h.Pos.String(),
			Limits: limits(h.Limits), Requires: caps(h.Requires),
		}
		n.OnFailure = h.OnFailure
		// Post-build hooks see the outputs, so they run again when an output changes.
		d := dep{buildroot: c.buildRoot(h.BuildRoot), after: outputs}
		if err := c.add(n, d); err != nil {
			return nil, err
		}
		c.hookRuns[hn] = append(c.hookRuns[hn], c.byName[n.Name])
		ids = append(ids, n.ID)
	}
	return ids, nil
}

// hookEnv is what a hook of img sees besides the sandbox's defaults: the
// image's name and version and where its outputs are mounted.
func hookEnv(img *lang.Image, outputs []ref) map[string]string {
	env := map[string]string{
		"SOURCE_DATE_EPOCH": SourceDateEpoch,
		"STRATA_IMAGE":      img.Name,
		"STRATA_VERSION":    img.Version,
	}
	var paths []string
	for i, o := range img.Outputs {
		if i < len(outputs) {
			name := o.Name
			if name == "" {
				name = path.Base(img.Name) + "." + o.Type
			}
			paths = append(paths, "/run/strata/outputs/"+name)
		}
	}
	if len(paths) > 0 {
		env["STRATA_OUTPUTS"] = strings.Join(paths, " ")
	}
	return env
}

func (c *compiler) jobOrder() ([]string, error) {
	return topoOrder(sortedKeys(c.ws.Jobs), func(name string) []string {
		var deps []string
		for _, need := range c.ws.Jobs[name].Needs {
			if j, ok := strings.CutPrefix(need, "jobs."); ok && c.ws.Jobs[j] != nil {
				deps = append(deps, j)
			}
		}
		return deps
	})
}

func (c *compiler) job(j *lang.Job) error {
	n := &plan.Node{
		Kind: plan.KindJob, Name: "jobs." + j.Name, Type: "job", Command: j.Command,
		Network: j.Network, Requires: caps(j.Requires),
		Env: map[string]string{"SOURCE_DATE_EPOCH": SourceDateEpoch}, Origin: j.Pos.String(),
		Limits: limits(j.Limits),
	}
	if len(j.Outputs) > 0 {
		opts, err := canonical(map[string]any{"outputs": j.Outputs})
		if err != nil {
			return err
		}
		n.Options = opts
	}
	d := dep{buildroot: c.buildRoot(j.BuildRoot)}
	if j.Image != "" {
		d.tree = c.images[j.Image]
	}
	for _, need := range j.Needs {
		if strings.HasPrefix(need, "jobs.") {
			jn := c.byName[need]
			d.after = append(d.after, ref{id: jn.ID, name: jn.Name})
		} else {
			d.after = append(d.after, c.images[need])
		}
	}
	return c.add(n, d)
}

func (c *compiler) publish(img *lang.Image) error {
	if img.Publish == nil {
		return nil
	}
	prefix := "images." + img.Name
	opts, err := canonical(map[string]any{
		"repository": img.Publish.Repository, "tags": img.Publish.Tags, "version": img.Version,
		"device_types": img.DeviceTypes, "default": img.Default, "annotations": img.Annotations,
	})
	if err != nil {
		return err
	}
	pi := c.p.Images[img.Name]
	n := &plan.Node{
		Kind: plan.KindPublish, Name: prefix + ".publish", Type: "oci", Options: opts,
		Platform: &pi.Platform, Origin: img.Pos.String(),
	}
	d := dep{}
	for _, id := range pi.Outputs {
		o := c.byID[id]
		d.after = append(d.after, ref{id: o.ID, name: o.Name})
	}
	// Hooks that must pass before publishing are ordering dependencies.
	for _, hn := range img.Hooks {
		if h := c.byName[prefix+".hooks."+hn]; h != nil && (h.Type == "post-build" || h.Type == "pre-publish") {
			n.Deps = append(n.Deps, h.ID)
		}
	}
	if err := c.add(n, d); err != nil {
		return err
	}
	pi.Publish = n.ID
	return nil
}

// limits turns a stage's, job's or hook's limits into the plan's (nil when all
// are the defaults). They stay out of the key documents.
func limits(l lang.Limits) *plan.Limits {
	if l == (lang.Limits{}) {
		return nil
	}
	return &plan.Limits{TimeoutSeconds: int64(l.Timeout / time.Second), Memory: l.Memory, TmpSize: l.TmpSize}
}

// mergeLimits gives one node reached from two places the larger of each limit
// written for it. An unset limit is the executor's default, which the plan
// does not know: a limit set in one place only becomes a floor under the
// default (Limits.AtLeastDefault), so the other place's default still holds.
func mergeLimits(a, b *plan.Limits) *plan.Limits {
	if a == nil && b == nil {
		return nil
	}
	var za, zb plan.Limits
	if a == nil {
		a = &za
	}
	if b == nil {
		b = &zb
	}
	out := &plan.Limits{}
	for _, f := range []struct {
		name string
		x, y int64
		dst  *int64
	}{
		{plan.LimitTimeout, a.TimeoutSeconds, b.TimeoutSeconds, &out.TimeoutSeconds},
		{plan.LimitMemory, a.Memory, b.Memory, &out.Memory},
		{plan.LimitTmpSize, a.TmpSize, b.TmpSize, &out.TmpSize},
	} {
		*f.dst = max(f.x, f.y)
		floor := a.Floor(f.name) || b.Floor(f.name) || (f.x == 0) != (f.y == 0)
		if floor && *f.dst > 0 {
			out.AtLeastDefault = append(out.AtLeastDefault, f.name)
		}
	}
	return out
}

func caps(cp *lang.Capabilities) *plan.Capabilities {
	if cp == nil {
		return nil
	}
	return &plan.Capabilities{Arch: cp.Arch, Features: cp.Features}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
