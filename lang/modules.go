package lang

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/token"
)

// module is a stage type as lang checks it: the CUE value a stage's options are
// filled into, and its option schema, so that an unknown option is an error for
// user modules as it is for built-ins.
type module struct {
	value cue.Value
	info  *StageModule
	// known are the option names the schema declares, sorted: listed once,
	// not for every stage of the type (a schema's fields come sorted by CUE's
	// topological sort, a tenth of a compile when repeated per stage).
	known []string
	// badCommand is set when the command reads an option the module does not
	// declare; that was reported once, at the command, and the module's
	// stages are not reported again for it.
	badCommand bool
}

// allows reports whether the module's option schema declares name, or has a
// pattern constraint (not its own ...) that matches it.
func (m module) allows(name string) bool {
	schema := m.value.LookupPath(pathOptions)
	if schema.LookupPath(cue.MakePath(cue.Str(name))).Exists() {
		return true
	}
	c := schema.LookupPath(cue.MakePath(cue.Str(name).Optional()))
	return c.Exists() && c.IncompleteKind() != cue.TopKind
}

// unknownOptions lists the fields of a stage's options that the module's option
// schema does not declare. A user module's options are open in the schema
// (#StageModule.options is {...}), and close() keeps an explicit ... open, so the
// check is done here: a field is known if the schema declares it (optional or
// not) or a pattern constraint of the schema (not the schema's own ...) matches it.
func (m module) unknownOptions(opts cue.Value) (unknown, known []string) {
	it, err := opts.Fields(cue.Optional(true))
	if err != nil {
		return nil, m.known
	}
	var schema cue.Value
	for it.Next() {
		name, ok := labelName(it.Selector())
		if !ok {
			continue
		}
		if _, found := slices.BinarySearch(m.known, name); found {
			continue
		}
		if !schema.Exists() {
			schema = m.value.LookupPath(pathOptions)
		}
		c := schema.LookupPath(cue.MakePath(cue.Str(name).Optional()))
		if c.Exists() && c.IncompleteKind() != cue.TopKind {
			continue // a pattern constraint of the module allows it
		}
		unknown = append(unknown, name)
	}
	return unknown, m.known
}

// newModule is the module of value v, its option names listed.
func newModule(v cue.Value, info *StageModule) module {
	known := fieldsOpt(v.LookupPath(pathOptions))
	slices.Sort(known)
	return module{value: v, info: info, known: slices.Compact(known)}
}

func (l *loader) decodeModules() {
	l.modules = map[string]module{}
	for _, f := range fields(l.schema.LookupPath(cue.ParsePath("#Builtin"))) {
		doc, _ := f.v.LookupPath(cue.ParsePath("doc")).String()
		info := &StageModule{
			Name: f.name, Doc: doc, Builtin: true,
			Schema: canonicalSource(f.v.LookupPath(cue.ParsePath("options")), octalModes),
			Pos:    Pos{File: schemaFilename},
		}
		l.modules[f.name] = newModule(f.v, info)
		l.ws.StageModules[f.name] = info
	}
	for _, f := range fields(l.lookup("stages")) {
		path := "stages." + f.name
		pos := l.index.at(path, Pos{File: "."})
		if l.badModules[f.name] {
			continue
		}
		if strings.HasPrefix(f.name, "strata.") {
			l.c.add(pos, path, "stage types named strata.* are reserved for built-ins")
			continue
		}
		doc, _ := f.v.LookupPath(cue.ParsePath("doc")).String()
		br, _ := f.v.LookupPath(cue.ParsePath("buildroot")).String()
		opts := f.v.LookupPath(cue.ParsePath("options"))
		info := &StageModule{
			Name: f.name, Doc: doc, BuildRoot: br, Pos: pos,
			Schema:  canonicalSource(opts),
			Command: canonicalSource(f.v.LookupPath(cue.ParsePath("command"))),
		}
		m := newModule(f.v, info)
		m.badCommand = !l.checkCommandOptions(m, path)
		l.modules[f.name] = m
		l.ws.StageModules[f.name] = info
	}
}

// checkStageTypeNames reports, once each, a user stage type whose name breaks
// the schema's #StageType rule, and keeps CUE's errors under it and the errors
// of the stages that use it from being reported again.
func (l *loader) checkStageTypeNames() {
	rule := l.schema.LookupPath(cue.ParsePath("#StageType"))
	for _, f := range fields(l.c.raw.LookupPath(cue.ParsePath("stages"))) {
		if rule.Unify(l.ctx.Encode(f.name)).Err() == nil {
			continue
		}
		path := cuePathString([]string{"stages", quoteLabel(f.name)})
		l.c.add(l.index.at("stages."+f.name, Pos{File: "."}), path,
			"invalid stage type name %q: a stage type is <vendor>.<name> in lower case, like acme.motd (letters, digits, '_', '-' and '.')", f.name)
		l.c.suppress = append(l.c.suppress, path)
		l.badModules[f.name] = true
	}
}

// checkCommandOptions reports each options.NAME a user module's command reads
// that the module does not declare, at the reference: every stage of the type
// would fail on it.
func (l *loader) checkCommandOptions(m module, path string) bool {
	fd, ok := l.index.fields[path+".command"]
	if !ok {
		return true
	}
	known := m.known
	good := true
	check := func(elem string, e ast.Node) {
		ast.Walk(e, func(n ast.Node) bool {
			se, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			base, ok := se.X.(*ast.Ident)
			name, _, err := ast.LabelName(se.Sel)
			if !ok || base.Name != "options" || err != nil || m.allows(name) {
				return true
			}
			good = false
			l.c.add(l.c.pos(se.Sel.Pos()), path+".command"+elem,
				"the command reads options.%s, which is not an option of %s (options: %s)%s",
				name, m.info.Name, strings.Join(known, ", "), didYouMean(name, known))
			return false
		}, nil)
	}
	if list, ok := fd.Value.(*ast.ListLit); ok {
		for i, el := range list.Elts {
			check(fmt.Sprintf("[%d]", i), el)
		}
	} else {
		check("", fd.Value)
	}
	return good
}

func (l *loader) moduleNames() []string {
	names := make([]string, 0, len(l.modules))
	for n := range l.modules {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// canonicalSource renders a (possibly incomplete) value as CUE source with struct
// fields sorted and comments dropped, so that neither reformatting nor reordering
// a module changes its digest.
//
// rewrite, if any, edits the syntax before it is printed. Only built-ins' sources
// are rewritten: a user module's source is part of its digest.
func canonicalSource(v cue.Value, rewrite ...func(ast.Node)) string {
	n := v.Syntax(cue.Raw(), cue.Docs(false), cue.Optional(true), cue.Definitions(true))
	sortFields(n)
	for _, r := range rewrite {
		r(n)
	}
	b, err := format.Node(n, format.Simplify())
	if err != nil {
		return ""
	}
	return string(b)
}

// octalModes writes the integers under fields named mode in octal (0o755, not
// 493), as people read file modes.
func octalModes(n ast.Node) {
	ast.Walk(n, func(n ast.Node) bool {
		f, ok := n.(*ast.Field)
		if !ok {
			return true
		}
		if name, _, err := ast.LabelName(f.Label); err != nil || name != "mode" {
			return true
		}
		ast.Walk(f.Value, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.INT {
				if v, err := strconv.ParseUint(strings.ReplaceAll(lit.Value, "_", ""), 0, 32); err == nil && v != 0 {
					lit.Value = fmt.Sprintf("0o%o", v)
				}
			}
			return true
		}, nil)
		return false
	}, nil)
}

func sortFields(n ast.Node) {
	ast.Walk(n, func(n ast.Node) bool {
		ast.SetComments(n, nil)
		if s, ok := n.(*ast.StructLit); ok {
			sort.SliceStable(s.Elts, func(i, j int) bool {
				a, aok := s.Elts[i].(*ast.Field)
				b, bok := s.Elts[j].(*ast.Field)
				if !aok || !bok {
					return aok && !bok
				}
				an, _, _ := ast.LabelName(a.Label)
				bn, _, _ := ast.LabelName(b.Label)
				return an < bn
			})
		}
		return true
	}, nil)
}
