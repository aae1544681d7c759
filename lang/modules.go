package lang

import (
	"sort"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/format"
)

// module is a stage type as lang checks it: the CUE value a stage's options are
// filled into, and its option schema, so that an unknown option is an error for
// user modules as it is for built-ins.
type module struct {
	value cue.Value
	info  *StageModule
}

// unknownOptions lists the fields of a stage's options that the module's option
// schema does not declare. A user module's options are open in the schema
// (#StageModule.options is {...}), and close() keeps an explicit ... open, so the
// check is done here: a field is known if the schema declares it (optional or
// not) or a pattern constraint of the schema (not the schema's own ...) matches it.
func (m module) unknownOptions(opts cue.Value) (unknown, known []string) {
	schema := m.value.LookupPath(pathOptions)
	decl := map[string]bool{}
	if it, err := schema.Fields(cue.Optional(true)); err == nil {
		for it.Next() {
			decl[it.Selector().Unquoted()] = true
		}
	}
	for n := range decl {
		known = append(known, n)
	}
	sort.Strings(known)
	it, err := opts.Fields(cue.Optional(true))
	if err != nil {
		return nil, known
	}
	for it.Next() {
		name := it.Selector().Unquoted()
		if decl[name] {
			continue
		}
		c := schema.LookupPath(cue.MakePath(cue.Str(name).Optional()))
		if c.Exists() && c.IncompleteKind() != cue.TopKind {
			continue // a pattern constraint of the module allows it
		}
		unknown = append(unknown, name)
	}
	return unknown, known
}

func (l *loader) decodeModules() {
	l.modules = map[string]module{}
	for _, f := range fields(l.schema.LookupPath(cue.ParsePath("#Builtin"))) {
		doc, _ := f.v.LookupPath(cue.ParsePath("doc")).String()
		info := &StageModule{
			Name: f.name, Doc: doc, Builtin: true,
			Schema: canonicalSource(f.v.LookupPath(cue.ParsePath("options"))),
			Pos:    Pos{File: schemaFilename},
		}
		l.modules[f.name] = module{value: f.v, info: info}
		l.ws.StageModules[f.name] = info
	}
	for _, f := range fields(l.lookup("stages")) {
		path := "stages." + f.name
		pos := l.index.at(path, Pos{File: "."})
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
		l.modules[f.name] = module{value: f.v, info: info}
		l.ws.StageModules[f.name] = info
	}
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
func canonicalSource(v cue.Value) string {
	n := v.Syntax(cue.Raw(), cue.Docs(false), cue.Optional(true), cue.Definitions(true))
	sortFields(n)
	b, err := format.Node(n, format.Simplify())
	if err != nil {
		return ""
	}
	return string(b)
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
