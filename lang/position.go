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
			// A computed label (an interpolation in a template) is indexed as "*",
			// so instances can still point at the template's lines.
			if _, ok := d.Label.(*ast.Interpolation); !ok {
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
	for path != "" {
		if p, ok := x.pos[path]; ok {
			return p, true
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return Pos{}, false
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
	for k, q := range x.pos {
		if q == p && (k == path || strings.HasPrefix(k, path+".") || strings.HasPrefix(k, path+"[")) {
			return true
		}
	}
	return false
}
