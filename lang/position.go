package lang

import (
	"strconv"
	"strings"

	"cuelang.org/go/cue/ast"
)

// posIndex maps field paths written literally in the user's files to the position
// of their label. CUE reports a unified value's position from its first conjunct,
// which is often the schema's; the index lets every model element and every error
// point at the user's own line instead.
type posIndex struct {
	c      *collector
	pos    map[string]Pos
	fields map[string]*ast.Field
}

func newPosIndex() *posIndex {
	return &posIndex{pos: map[string]Pos{}, fields: map[string]*ast.Field{}}
}

func (x *posIndex) addFile(c *collector, decls []ast.Decl) {
	x.c = c
	for _, d := range decls {
		x.decl("", d)
	}
}

func (x *posIndex) addExpr(c *collector, e ast.Expr) {
	x.c = c
	x.expr("", e)
}

func (x *posIndex) decl(prefix string, d ast.Decl) {
	switch d := d.(type) {
	case *ast.Field:
		name, _, err := ast.LabelName(d.Label)
		if err != nil {
			// A computed label (an interpolation in a template, (n) in a
			// comprehension) is indexed as "*", so what it makes can still
			// point at its lines.
			switch d.Label.(type) {
			case *ast.Interpolation, *ast.ParenExpr:
			default:
				return
			}
			name = "*"
		}
		p := joinPath(prefix, name)
		if _, ok := x.pos[p]; !ok {
			x.pos[p] = x.c.pos(d.Label.Pos())
			x.fields[p] = d
		}
		x.expr(p, d.Value)
	case *ast.EmbedDecl:
		x.expr(prefix, d.Expr)
	case *ast.Comprehension:
		x.expr(prefix, d.Value)
	}
}

func (x *posIndex) expr(prefix string, e ast.Expr) {
	switch e := e.(type) {
	case *ast.StructLit:
		for _, d := range e.Elts {
			x.decl(prefix, d)
		}
	case *ast.ListLit:
		for i, el := range e.Elts {
			p := prefix + "[" + strconv.Itoa(i) + "]"
			if _, ok := x.pos[p]; !ok {
				x.pos[p] = x.c.pos(el.Pos())
			}
			x.expr(p, el)
		}
	case *ast.BinaryExpr:
		x.expr(prefix, e.X)
		x.expr(prefix, e.Y)
	case *ast.ParenExpr:
		x.expr(prefix, e.X)
	}
}

func joinPath(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// lookup returns the position of the label at path.
func (x *posIndex) lookup(path string) (Pos, bool) {
	p, ok := x.pos[path]
	return p, ok
}

// lookupNearest returns the position of path or of its nearest indexed ancestor.
func (x *posIndex) lookupNearest(path string) (Pos, bool) {
	key := x.resolve(path)
	p, ok := x.pos[key]
	return p, ok
}

// resolve returns the indexed key nearest to path: path itself, or its longest
// indexed ancestor, where one segment may be "*" (a name a comprehension or
// an interpolation made); "" when nothing is indexed.
func (x *posIndex) resolve(path string) string {
	best := ""
	try := func(p string) {
		for p != "" {
			if _, ok := x.pos[p]; ok {
				if len(p) > len(best) {
					best = p
				}
				return
			}
			i := strings.LastIndexAny(p, ".[")
			if i < 0 {
				return
			}
			p = p[:i]
		}
	}
	try(path)
	for i := 0; i < len(path); i++ {
		if path[i] != '.' {
			continue
		}
		j := strings.IndexAny(path[i+1:], ".[")
		if j < 0 {
			j = len(path) - i - 1
		}
		try(path[:i+1] + "*" + path[i+1+j:])
	}
	return best
}

// at returns the position for path, falling back to its ancestors and then to def.
func (x *posIndex) at(path string, def Pos) Pos {
	if p, ok := x.lookupNearest(path); ok {
		return p
	}
	return def
}

// within reports whether p is the position of a field indexed at or below path.
func (x *posIndex) within(path string, p Pos) bool {
	if _, ok := x.pos[path]; !ok {
		// Made by a comprehension: its fields are indexed under a "*".
		if key := x.resolve(path); strings.Contains(key, "*") && strings.Count(key, ".") == strings.Count(path, ".") {
			path = key
		}
	}
	for k, q := range x.pos {
		if q == p && (k == path || strings.HasPrefix(k, path+".") || strings.HasPrefix(k, path+"[")) {
			return true
		}
	}
	return false
}
