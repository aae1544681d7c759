package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
)

// ErrForeignHost is wrapped by Verify when a plan has nodes on the "host" build
// root and was compiled on a host with another fingerprint: their keys name
// that host's /usr, not this one's.
var ErrForeignHost = errors.New("plan compiled for another host")

// Verified is a plan whose every node was checked by Verify: its key was
// recomputed from its own fields and its dependencies' keys, its kind, type and
// names are known and safe, and its edges are complete. Only Verify makes one,
// so code that takes a *Verified (the executor) cannot be handed a node whose
// result would be stored under another node's key. The plan must not be
// modified afterwards.
type Verified struct {
	p    *Plan
	byID map[string]*Node
}

// Plan returns the verified plan.
func (v *Verified) Plan() *Plan { return v.p }

// Node returns the node of the plan with the given ID.
func (v *Verified) Node(id string) (VerifiedNode, bool) {
	n, ok := v.byID[id]
	return VerifiedNode{n}, ok
}

// VerifiedNode is a node of a Verified plan. Only a Verified hands them out,
// so code that takes one (a runner, a dispatcher, a remote worker) cannot be
// given a node Verify has not checked. The zero value holds no node.
type VerifiedNode struct {
	n *Node
}

// Node returns the node, or nil for the zero VerifiedNode.
func (n VerifiedNode) Node() *Node { return n.n }

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Host is the fingerprint of the machine that will run the plan
	// (HostFingerprint). A plan with nodes on the "host" build root must have
	// been compiled with the same fingerprint.
	Host Host
}

// lowerHex reports whether s is n lower-case hex digits (a digest's or a git
// commit's): checked for every node of every build, cheaper than a regexp
// and nothing to compile at start-up.
func lowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// hookEvents are the lifecycle events a hook node may run on.
var hookEvents = map[string]bool{"pre-build": true, "post-build": true, "pre-publish": true, "cleanup": true}

// Verify checks an untrusted plan (a file, a cache entry) before anything runs
// it, as BuildKit treats a definition it is sent: every node's strong key is
// recomputed from the node's own fields and its dependencies' keys and must
// equal its ID, so an edited node cannot have its result stored under the
// honest key; kinds, stage types and output formats must be known; build roots,
// trees and mounts must be earlier nodes of the plan and listed in Deps; image,
// output and mount names must be safe to use as paths. Errors wrap ErrInvalid
// (or ErrForeignHost) and name the node.
//
// Weak keys are not checked: they only select what `strata explain` compares
// against, never a result.
func Verify(p *Plan, opts VerifyOptions) (*Verified, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: no plan", ErrInvalid)
	}
	if p.Version != Version {
		return nil, fmt.Errorf("%w: version %d, this strata reads version %d", ErrInvalid, p.Version, Version)
	}
	v := &verifier{p: p, byID: make(map[string]*Node, len(p.Nodes)), names: map[string]bool{}}
	for i, n := range p.Nodes {
		if err := v.node(i, n); err != nil {
			return nil, err
		}
	}
	if err := v.images(); err != nil {
		return nil, err
	}
	if err := v.pending(); err != nil {
		return nil, err
	}
	if v.hostNode != nil && p.Host != opts.Host {
		return nil, fmt.Errorf("%w: %s (%s) runs on the host's /usr, and the plan was compiled on %s, this is %s; compile the plan here",
			ErrForeignHost, v.hostNode.Name, v.hostNode.Origin, describeHost(p.Host), describeHost(opts.Host))
	}
	return &Verified{p: p, byID: v.byID}, nil
}

func describeHost(h Host) string {
	return fmt.Sprintf("%s %s/%s (strata %s)", h.OS, h.OSVersion, h.Arch, h.StrataVersion)
}

type verifier struct {
	p        *Plan
	byID     map[string]*Node
	names    map[string]bool
	hostNode *Node
}

// maxTimeoutSeconds is the longest timeout a time.Duration holds.
const maxTimeoutSeconds = math.MaxInt64 / int64(time.Second)

func (v *verifier) node(i int, n *Node) error {
	if n == nil {
		return fmt.Errorf("%w: node %d is null", ErrInvalid, i)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: node %s (%s): %s", ErrInvalid, clip(n.Name), clip(n.Origin), fmt.Sprintf(format, a...))
	}
	if !lowerHex(n.ID, 64) {
		return bad("id %q is not a hex SHA-256", clip(n.ID))
	}
	if _, dup := v.byID[n.ID]; dup {
		return bad("appears twice")
	}
	for _, name := range append([]string{n.Name}, aliasNames(n)...) {
		if !printable(name) || name == "" {
			return fmt.Errorf("%w: node %s: name %q is empty or has control characters", ErrInvalid, n.ID, clip(name))
		}
		if v.names[name] {
			return bad("the name %s is used twice", clip(name))
		}
		v.names[name] = true
	}
	if !printable(n.Origin) {
		return bad("origin has control characters")
	}
	if l := n.Limits; l != nil && (l.TimeoutSeconds < 0 || l.TimeoutSeconds > maxTimeoutSeconds || l.Memory < 0 || l.TmpSize < 0) {
		return bad("limits %+v are negative or out of range", *l)
	}
	if l := n.Limits; l != nil {
		for _, name := range l.AtLeastDefault {
			if name != LimitTimeout && name != LimitMemory && name != LimitTmpSize {
				return bad("at_least_default names %q, which is not a limit", clip(name))
			}
		}
	}
	deps := map[string]bool{}
	for _, d := range n.Deps {
		if _, ok := v.byID[d]; !ok {
			return bad("depends on %s, which does not come before it", clip(d))
		}
		deps[d] = true
	}
	// Every input is an edge: a plan with an input but no edge would run the
	// node before its input exists.
	treeInput := func(role, id string) error {
		if !deps[id] {
			return bad("%s %s is not among its dependencies", role, clip(id))
		}
		if k := v.byID[id].Kind; k != KindSource && k != KindStage {
			return bad("%s %s is a %s node, which has no tree", role, v.byID[id].Name, k)
		}
		return nil
	}
	in := n.Inputs
	if in.Tree != "" {
		if err := treeInput("tree", in.Tree); err != nil {
			return err
		}
	}
	switch in.BuildRoot {
	case "":
	case HostRoot:
		v.hostNode = firstNonNil(v.hostNode, n)
	default:
		if err := treeInput("build root", in.BuildRoot); err != nil {
			return err
		}
	}
	for name, id := range in.Mounts {
		if err := CheckSegment(name); err != nil {
			return bad("input %v", err)
		}
		if err := treeInput("input "+name, id); err != nil {
			return err
		}
	}
	for _, id := range in.After {
		if !deps[id] {
			return bad("after %s is not among its dependencies", clip(id))
		}
	}
	if err := v.kind(n, bad); err != nil {
		return err
	}
	doc, err := n.StrongKeyInputs(v.p.Host)
	if err != nil {
		return bad("%v", err)
	}
	if Hash(doc) != n.ID {
		return bad("its id is not the key of its content: the node was edited after it was compiled")
	}
	v.byID[n.ID] = n
	return nil
}

// kind checks what a node of each kind needs to run.
func (v *verifier) kind(n *Node, bad func(string, ...any) error) error {
	switch n.Kind {
	case KindSource:
		return checkSource(n, bad)
	case KindStage:
		m := v.p.Stages[n.Type]
		if m == nil {
			return bad("unknown stage type %q", clip(n.Type))
		}
		if b, ok := LookupBuiltin(n.Type); ok || strings.HasPrefix(n.Type, "strata.") || m.Builtin {
			if !ok || !m.Builtin {
				return bad("%q is not a built-in stage type of this strata", clip(n.Type))
			}
			if n.ModuleDigest != b.Digest() {
				return bad("built-in %s has another ABI in this strata (the plan was compiled by another version); compile it again", n.Type)
			}
			return nil
		}
		if n.ModuleDigest != m.Digest {
			return bad("module digest differs from stage module %s", clip(n.Type))
		}
		if len(n.Command) == 0 {
			return bad("stage module %s has no command", clip(n.Type))
		}
	case KindOutput:
		f, ok := LookupOutput(n.Type)
		if !ok {
			return bad("unknown output format %q", clip(n.Type))
		}
		if n.ModuleDigest != f.Digest() {
			return bad("output format %s has another ABI in this strata (the plan was compiled by another version); compile it again", n.Type)
		}
		if err := CheckSegment(n.Artifact); err != nil {
			return bad("output name %v", err)
		}
	case KindHook:
		if !hookEvents[n.Type] {
			return bad("unknown hook event %q", clip(n.Type))
		}
		if n.OnFailure != "fail" && n.OnFailure != "warn" {
			return bad("on_failure %q is neither fail nor warn", clip(n.OnFailure))
		}
		if len(n.Command) == 0 {
			return bad("a hook needs a command")
		}
	case KindJob:
		if len(n.Command) == 0 {
			return bad("a job needs a command")
		}
	case KindPublish:
	default:
		return bad("unknown kind %q", clip(n.Kind))
	}
	return nil
}

func checkSource(n *Node, bad func(string, ...any) error) error {
	s := n.Source
	if s == nil {
		return bad("a source node has no source")
	}
	switch n.Type {
	case "url":
		if !strings.HasPrefix(s.URL, "https://") && !strings.HasPrefix(s.URL, "http://") && !strings.HasPrefix(s.URL, "file://") {
			return bad("url %q is not https, http or file", clip(s.URL))
		}
		if !lowerHex(s.SHA256, 64) {
			return bad("sha256 %q is not a hex SHA-256", clip(s.SHA256))
		}
	case "git":
		if s.Git == "" || !lowerHex(s.Commit, 40) {
			return bad("a git source needs a repository and a 40-hex commit")
		}
	case "path":
		if err := CheckRelPath(s.Path); err != nil {
			return bad("path %v", err)
		}
		d, ok := strings.CutPrefix(s.Digest, "sha256:")
		if !ok || !lowerHex(d, 64) {
			return bad("digest %q is not a sha256 digest", clip(s.Digest))
		}
	default:
		return bad("unknown source type %q", clip(n.Type))
	}
	return nil
}

// CheckRelPath reports whether p is a clean slash-separated path inside a
// directory: not absolute, no "..", "." or empty element.
func CheckRelPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || !printable(p) {
		return fmt.Errorf("%q must be relative, inside the workspace", clip(p))
	}
	for _, el := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
		if el == ".." {
			return fmt.Errorf("%q must be relative, inside the workspace", clip(p))
		}
	}
	return nil
}

func (v *verifier) images() error {
	for key, img := range v.p.Images {
		bad := func(format string, a ...any) error {
			return fmt.Errorf("%w: image %s: %s", ErrInvalid, clip(key), fmt.Sprintf(format, a...))
		}
		if img == nil || img.Name != key {
			return bad("entry does not carry its own name")
		}
		if err := CheckName(key); err != nil {
			return bad("%v", err)
		}
		// out/<image>/ would hold a nested image's out directory, which an
		// export of the outer image replaces whole (lang refuses these too).
		for i := strings.LastIndex(key, "/"); i > 0; i = strings.LastIndex(key[:i], "/") {
			if v.p.Images[key[:i]] != nil {
				return bad("its name extends image %s's, inside whose out directory it would be exported", clip(key[:i]))
			}
		}
		if img.Tree != "" {
			if t := v.byID[img.Tree]; t == nil || (t.Kind != KindStage && t.Kind != KindSource) {
				return bad("tree %s is not a stage of the plan", clip(img.Tree))
			}
		}
		for _, id := range img.Outputs {
			o := v.byID[id]
			if o == nil || o.Kind != KindOutput || o.Inputs.Tree != img.Tree {
				return bad("output %s is not an output of the image's tree", clip(id))
			}
		}
		for _, id := range img.Hooks {
			if n := v.byID[id]; n == nil || n.Kind != KindHook {
				return bad("hook %s is not a hook node", clip(id))
			}
		}
		if img.Publish != "" {
			if n := v.byID[img.Publish]; n == nil || n.Kind != KindPublish {
				return bad("publish %s is not a publish node", clip(img.Publish))
			}
		}
		for _, r := range img.Runtime {
			if _, ok := v.p.Images[strings.TrimPrefix(r, "images.")]; !ok {
				return bad("runtime image %s is not in the plan", clip(r))
			}
		}
	}
	return nil
}

// pending checks the templates that wait on resource jobs: named as a
// workspace names things, in order, each waiting on a job node of the plan that
// answers to the job's name and must write the records.
func (v *verifier) pending() error {
	for i, pt := range v.p.Pending {
		bad := func(format string, a ...any) error {
			return fmt.Errorf("%w: pending template %s: %s", ErrInvalid, clip(pt.Template), fmt.Sprintf(format, a...))
		}
		for _, name := range []string{pt.Template, pt.Resource} {
			if err := CheckName(name); err != nil {
				return bad("%v", err)
			}
		}
		if i > 0 && v.p.Pending[i-1].Template >= pt.Template {
			return bad("pending templates are not sorted by name, or one appears twice")
		}
		if !printable(pt.Origin) {
			return bad("origin has control characters")
		}
		n := v.byID[pt.Node]
		if n == nil || n.Kind != KindJob {
			return bad("node %s is not a job of the plan", clip(pt.Node))
		}
		if n.Name != pt.Job && !slices.Contains(aliasNames(n), pt.Job) {
			return bad("node %s is %s, not %s", n.ID, n.Name, clip(pt.Job))
		}
		var o struct {
			Outputs []string `json:"outputs"`
		}
		if err := json.Unmarshal(n.Options, &o); err != nil || !slices.Contains(o.Outputs, RecordsFile) {
			return bad("job %s does not list %s among its outputs", n.Name, RecordsFile)
		}
	}
	for _, e := range v.p.Expanded {
		if CheckName(e.Template) != nil || !strings.HasPrefix(e.Job, "jobs.") || CheckName(strings.TrimPrefix(e.Job, "jobs.")) != nil || e.Records < 0 || e.Instances < 0 {
			return fmt.Errorf("%w: expanded template %q (%q): not a template and a job", ErrInvalid, clip(e.Template), clip(e.Job))
		}
	}
	return nil
}

func aliasNames(n *Node) []string {
	out := make([]string, len(n.Aliases))
	for i, a := range n.Aliases {
		out[i] = a.Name
	}
	return out
}

func firstNonNil(a, b *Node) *Node {
	if a != nil {
		return a
	}
	return b
}

// printable reports whether s is valid UTF-8 without control characters, so it
// can be printed on a terminal as it is.
func printable(s string) bool {
	for _, r := range s {
		if r == unicode.ReplacementChar || unicode.IsControl(r) {
			return false
		}
	}
	return true
}
