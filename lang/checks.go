package lang

import (
	"fmt"
	"sort"
	"strings"
)

// ref is one reference from a field to a named thing.
type ref struct {
	path   string // the referring field, for errors
	pos    Pos
	target string // "images.x", "sources.y", "jobs.z", "hooks.h"
	build  bool   // a build-time dependency (enters the key, may not form a cycle)
	note   string // appended to errors: the template record an instance comes from
}

// refs lists every reference the workspace makes, keyed by the referrer's name.
func (l *loader) refs() map[string][]ref {
	out := map[string][]ref{}
	at := func(owner, path string, fallback Pos) Pos {
		return l.index.at(path, fallback)
	}
	images := merged(l.ws.Images, l.partial.Images)
	for _, name := range sortedKeys(images) {
		img := images[name]
		owner := "images." + name
		base, note := owner, ""
		if img.Instance != nil {
			base = l.instancePosPath("templates."+img.Instance.Template+".each.images", name)
			note = l.instanceNote(img.Instance)
		}
		add := func(field, target string, build bool) {
			out[owner] = append(out[owner], ref{path: owner + "." + field, pos: at(owner, base+"."+field, img.Pos), target: target, build: build, note: note})
		}
		if img.BuildRoot != "host" {
			add("buildroot", img.BuildRoot, true)
		}
		if img.From != "" {
			add("from", img.From, true)
		}
		for i, r := range img.Runtime {
			add(fmt.Sprintf("runtime[%d]", i), r, false)
		}
		for i, h := range img.Hooks {
			// A pre-build hook runs before the image's stages, so its build
			// root is built first; other hooks run after, and depend on nothing
			// the image waits for.
			hk := l.ws.Hooks[h]
			add(fmt.Sprintf("hooks[%d]", i), "hooks."+h, hk != nil && hk.On == "pre-build")
		}
		for i, st := range img.Stages {
			for _, in := range sortedKeys(st.Inputs) {
				add(fmt.Sprintf("stages[%d].inputs.%s", i, in), st.Inputs[in], true)
			}
			if m := l.ws.StageModules[st.Type]; m != nil && m.BuildRoot != "" && m.BuildRoot != "host" {
				out[owner] = append(out[owner], ref{path: "stages." + st.Type + ".buildroot", pos: m.Pos, target: m.BuildRoot, build: true})
			}
		}
	}
	jobs := merged(l.ws.Jobs, l.partial.Jobs)
	for _, name := range sortedKeys(jobs) {
		j := jobs[name]
		owner := "jobs." + name
		base, note := owner, ""
		if j.Instance != nil {
			base = l.instancePosPath("templates."+j.Instance.Template+".each.jobs", name)
			note = l.instanceNote(j.Instance)
		}
		add := func(field, target string, build bool) {
			out[owner] = append(out[owner], ref{path: owner + "." + field, pos: l.index.at(base+"."+field, j.Pos), target: target, build: build, note: note})
		}
		if j.Image != "" {
			add("image", j.Image, true)
		}
		if j.BuildRoot != "host" {
			add("buildroot", j.BuildRoot, true)
		}
		for i, n := range j.Needs {
			add(fmt.Sprintf("needs[%d]", i), n, true)
		}
	}
	for _, name := range sortedKeys(l.ws.Hooks) {
		h := l.ws.Hooks[name]
		if h.BuildRoot != "host" {
			owner := "hooks." + name
			out[owner] = append(out[owner], ref{path: owner + ".buildroot", pos: l.index.at(owner+".buildroot", h.Pos), target: h.BuildRoot, build: true})
		}
	}
	for _, name := range sortedKeys(l.ws.Resources) {
		if r := l.ws.Resources[name]; r.Job != "" {
			owner := "resources." + name
			out[owner] = append(out[owner], ref{path: owner + ".job", pos: l.index.at(owner+".job", r.Pos), target: "jobs." + r.Job})
		}
	}
	for _, name := range sortedKeys(l.ws.StageModules) {
		m := l.ws.StageModules[name]
		if m.BuildRoot != "" && m.BuildRoot != "host" {
			owner := "stages." + name
			out[owner] = append(out[owner], ref{path: owner + ".buildroot", pos: l.index.at(owner+".buildroot", m.Pos), target: m.BuildRoot})
		}
	}
	return out
}

// merged is a and b in one map; a wins.
func merged[V any](a, b map[string]V) map[string]V {
	out := make(map[string]V, len(a)+len(b))
	for k, v := range b {
		out[k] = v
	}
	for k, v := range a {
		out[k] = v
	}
	return out
}

func (l *loader) exists(target string) bool {
	if l.failed[target] {
		return true
	}
	kind, name, _ := strings.Cut(target, ".")
	switch kind {
	case "images":
		return l.ws.Images[name] != nil
	case "sources":
		return l.ws.Sources[name] != nil
	case "jobs":
		return l.ws.Jobs[name] != nil
	case "hooks":
		return l.ws.Hooks[name] != nil
	}
	return false
}

// keysOf lists the names defined in a section (images, sources, jobs, hooks),
// those that failed to decode included.
func (l *loader) keysOf(kind string) []string {
	set := map[string]bool{}
	for target := range l.failed {
		if k, name, _ := strings.Cut(target, "."); k == kind {
			set[name] = true
		}
	}
	var names []string
	switch kind {
	case "images":
		names = sortedKeys(l.ws.Images)
	case "sources":
		names = sortedKeys(l.ws.Sources)
	case "jobs":
		names = sortedKeys(l.ws.Jobs)
	case "hooks":
		names = sortedKeys(l.ws.Hooks)
	}
	for _, n := range names {
		set[n] = true
	}
	return sortedKeys(set)
}

func (l *loader) names(kind string) string {
	keys := l.keysOf(kind)
	if len(keys) == 0 {
		return "none are defined"
	}
	return "defined: " + strings.Join(keys, ", ")
}

func (l *loader) checkReferences() {
	all := l.refs()
	for _, owner := range sortedKeys(all) {
		for _, r := range all[owner] {
			if !l.exists(r.target) {
				kind, name, _ := strings.Cut(r.target, ".")
				hint := ""
				if n := nearest(name, l.keysOf(kind)); n != "" {
					hint = "; did you mean " + kind + "." + n + "?"
				}
				l.c.add(r.pos, r.path, "%s is not defined (%s)%s%s", r.target, l.names(kind), hint, r.note)
			}
		}
	}
}

// checkCycles reports every build-dependency cycle once, at the reference that
// closes it, with the whole chain.
func (l *loader) checkCycles() {
	all := l.refs()
	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	var stack []string
	reported := map[string]bool{}
	var visit func(n string)
	visit = func(n string) {
		state[n] = active
		stack = append(stack, n)
		for _, r := range all[n] {
			if !r.build || !l.exists(r.target) || l.failed[r.target] {
				continue
			}
			switch state[r.target] {
			case unseen:
				visit(r.target)
			case active:
				i := indexOf(stack, r.target)
				cycle := append(append([]string{}, stack[i:]...), r.target)
				key := canonicalCycle(stack[i:])
				if !reported[key] {
					reported[key] = true
					l.c.add(r.pos, r.path, "build dependency cycle: %s%s", strings.Join(cycle, " → "), r.note)
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
	}
	for _, n := range sortedKeys(all) {
		if state[n] == unseen {
			visit(n)
		}
	}
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

func canonicalCycle(c []string) string {
	s := append([]string{}, c...)
	sort.Strings(s)
	return strings.Join(s, ",")
}

// checkNestedImages refuses an image whose name extends another's with a
// namespace segment (images.ns and images.ns/sub): its outputs would be
// exported inside the other's out directory (out/ns/sub/ in out/ns/), which a
// build of the other replaces whole, so one build would delete what the
// other exported, without an error.
func (l *loader) checkNestedImages() {
	for _, name := range sortedKeys(l.ws.Images) {
		for i := strings.LastIndex(name, "/"); i > 0; i = strings.LastIndex(name[:i], "/") {
			parent := name[:i]
			if l.ws.Images[parent] == nil {
				continue
			}
			l.c.add(l.ws.Images[name].Pos, "images."+quoteLabel(name),
				"images.%s is also an image: its out directory, out/%s/, would hold out/%s/, and a build of images.%s replaces its directory whole; give them names neither of which extends the other (e.g. %s/main and %s)",
				parent, parent, name, parent, parent, name)
			break
		}
	}
}
