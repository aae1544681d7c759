package lang

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"cuelang.org/go/cue"
)

// Checks of built-in stages' options that CUE's schema does not express: they
// would otherwise fail only when the stage runs.

// checkImagePaths reports the paths of a strata.files stage (the keys of dirs,
// files and symlinks) that are relative or hold a ".." segment, at the user's
// key. It runs before the options meet the schema, whose pattern would call a
// relative key a field that is not allowed.
func (l *loader) checkImagePaths(typ string, opts cue.Value, path, posPath string, def Pos) bool {
	if typ != "strata.files" {
		return true
	}
	ok := true
	for _, kind := range []string{"dirs", "files", "symlinks"} {
		for _, f := range fields(opts.LookupPath(cue.MakePath(cue.Str(kind)))) {
			if msg := imagePathProblem(f.name); msg != "" {
				p := "options." + kind + "." + f.name
				l.c.add(l.index.at(posPath+"."+p, def), cuePathString([]string{path, "options", kind, quoteLabel(f.name)}), "%s", msg)
				ok = false
			}
		}
	}
	return ok
}

// imagePathProblem says what is wrong with a path inside an image, or "".
func imagePathProblem(p string) string {
	if !strings.HasPrefix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") {
		return fmt.Sprintf("%q: paths are absolute, inside the image (like /etc/motd), with no '..'", p)
	}
	return ""
}

// quoteLabel quotes a label for cuePathString when it does not read plainly.
func quoteLabel(s string) string {
	if plainLabel(s) {
		return s
	}
	return fmt.Sprintf("%q", s)
}

// checkStageOptions checks a built-in stage's decoded options against the rest
// of the stage: the input a copy or extract reads is one of the stage's inputs,
// their destinations stay inside the image, and debootstrap has the network.
func (l *loader) checkStageOptions(st Stage, path, posPath string) bool {
	at := func(field string) Pos { return l.index.at(posPath+"."+field, st.Pos) }
	switch st.Type {
	case "strata.copy", "strata.extract":
		var o struct {
			Input string `json:"input"`
			Dst   string `json:"dst"`
		}
		if err := json.Unmarshal(st.Options, &o); err != nil {
			return true // the schema has already said what it is
		}
		ok := true
		if _, has := st.Inputs[o.Input]; !has {
			names := sortedKeys(st.Inputs)
			have := "the stage has none: add inputs: " + o.Input + `: "sources.NAME" or "images.NAME"`
			if len(names) > 0 {
				have = "inputs: " + strings.Join(names, ", ")
			}
			l.c.add(at("options.input"), path+".options.input", "input %q is not one of this stage's inputs (%s)%s", o.Input, have, didYouMean(o.Input, names))
			ok = false
		}
		if msg := imagePathProblem(o.Dst); msg != "" {
			l.c.add(at("options.dst"), path+".options.dst", "%s", msg)
			ok = false
		}
		return ok
	case "strata.busybox":
		// Paths the stage writes (install) or reads (binary) in the image:
		// the build refused '..' where vet let it through.
		var o struct {
			Binary  string `json:"binary"`
			Install string `json:"install"`
		}
		if json.Unmarshal(st.Options, &o) != nil {
			return true
		}
		ok := true
		for _, f := range [][2]string{{"binary", o.Binary}, {"install", o.Install}} {
			if field, p := f[0], f[1]; imagePathProblem(p) != "" {
				msg := imagePathProblem(p)
				l.c.add(at("options."+field), path+".options."+field, "%s", msg)
				ok = false
			}
		}
		return ok
	case "strata.users":
		var o struct {
			Users map[string]struct {
				Home string `json:"home"`
			} `json:"users"`
		}
		if json.Unmarshal(st.Options, &o) != nil {
			return true
		}
		ok := true
		for _, name := range sortedKeys(o.Users) {
			if msg := imagePathProblem(o.Users[name].Home); msg != "" {
				field := "options.users." + quoteLabel(name) + ".home"
				l.c.add(at(field), path+"."+field, "%s", msg)
				ok = false
			}
		}
		return ok
	case "strata.debootstrap":
		if !st.Network {
			l.c.add(at("type"), path, "strata.debootstrap downloads packages: set network: true on this stage")
			return false
		}
	}
	return true
}

// usersOptions is what checkUserGroups reads of a strata.users stage.
type usersOptions struct {
	Groups map[string]struct {
		GID int64 `json:"gid"`
	} `json:"groups"`
	Users map[string]struct {
		UID    int64    `json:"uid"`
		GID    *int64   `json:"gid"`
		Groups []string `json:"groups"`
	} `json:"users"`
}

// transparent are the built-in stages known not to write /etc/group: after any
// other stage, the groups of the tree are not known before it is built.
var transparent = map[string]bool{
	"strata.users": true, "strata.hostname": true, "strata.busybox": true,
}

// checkUserGroups reports a supplementary group of a strata.users user that no
// strata.users stage of the image (or of the images it is built from) defines,
// while nothing else can have written /etc/group: the stage would fail at build
// time. The root group is always there.
func (l *loader) checkUserGroups() {
	for _, name := range sortedKeys(l.ws.Images) {
		if l.c.reportedUnder("images." + name) {
			continue // its stages may not all be there
		}
		var chain []*Image
		seen := map[string]bool{}
		for img := l.ws.Images[name]; img != nil && !seen[img.Name]; {
			seen[img.Name] = true
			chain = append([]*Image{img}, chain...)
			from, ok := strings.CutPrefix(img.From, "images.")
			if !ok {
				break
			}
			if img = l.ws.Images[from]; img == nil {
				chain = nil // built from an image that failed: unknown
			}
		}
		known := map[string]bool{"root": true}
		gids := map[int64]bool{0: true} // of the groups known
		for _, img := range chain {
			own := img.Name == name
			for i, st := range img.Stages {
				if !transparent[st.Type] && !(st.Type == "strata.files" && !writesGroup(st.Options)) {
					known = nil
				}
				if st.Type != "strata.users" {
					continue
				}
				var o usersOptions
				if json.Unmarshal(st.Options, &o) != nil {
					continue
				}
				if known != nil {
					for g, def := range o.Groups {
						known[g], gids[def.GID] = true, true
					}
					// As the stage does: a user whose gid no group has gets a
					// primary group named after it, in the order of names.
					for _, u := range sortedKeys(o.Users) {
						gid := o.Users[u].UID
						if g := o.Users[u].GID; g != nil {
							gid = *g
						}
						if !gids[gid] {
							known[u], gids[gid] = true, true
						}
					}
				}
				if !own || known == nil {
					continue
				}
				l.checkGroupsKnown(img, i, o, known)
			}
		}
	}
}

func (l *loader) checkGroupsKnown(img *Image, i int, o usersOptions, known map[string]bool) {
	stPath := fmt.Sprintf("images.%s.stages[%d]", img.Name, i)
	posPath := stPath
	if img.Instance != nil {
		posPath = fmt.Sprintf("%s.stages[%d]", l.instancePosPath("templates."+img.Instance.Template+".each.images", img.Name), i)
	}
	names := sortedKeys(known)
	for _, u := range sortedKeys(o.Users) {
		for j, g := range o.Users[u].Groups {
			if known[g] {
				continue
			}
			field := fmt.Sprintf("options.users.%s.groups[%d]", u, j)
			l.c.add(l.index.at(posPath+"."+field, img.Stages[i].Pos), stPath+"."+field,
				"group %q is not defined: add it to groups in this stage or an earlier strata.users stage (defined: %s)%s",
				g, strings.Join(names, ", "), didYouMean(g, names))
		}
	}
}

// writesGroup reports whether strata.files options write /etc/group.
func writesGroup(options []byte) bool {
	var o struct {
		Files    map[string]json.RawMessage `json:"files"`
		Symlinks map[string]json.RawMessage `json:"symlinks"`
	}
	if json.Unmarshal(options, &o) != nil {
		return true
	}
	_, f := o.Files["/etc/group"]
	_, s := o.Symlinks["/etc/group"]
	return f || s
}
