package lang

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"
)

// Error is one problem in a workspace, at a position in the user's files.
type Error struct {
	Pos  Pos    `json:"pos"`
	Path string `json:"path,omitempty"`
	Msg  string `json:"message"`
}

func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s: %s", e.Pos, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.Pos, e.Path, e.Msg)
}

// Errors is every problem found in a workspace, sorted by position, one per line.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// ErrInvalid is matched (errors.Is) by every Errors value, so callers can tell a
// bad workspace (exit 2) from an I/O failure.
var ErrInvalid = errors.New("invalid workspace")

// Is reports whether target is ErrInvalid.
func (es Errors) Is(target error) bool { return target == ErrInvalid }

// collector gathers errors while loading, converting CUE's to positioned ones.
type collector struct {
	dir   string
	index *posIndex
	errs  Errors
	seen  map[string]bool
}

func (c *collector) add(pos Pos, path, format string, args ...any) {
	e := &Error{Pos: pos, Path: path, Msg: fmt.Sprintf(format, args...)}
	key := e.Error()
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	if c.seen[key] {
		return
	}
	c.seen[key] = true
	c.errs = append(c.errs, e)
}

// pos converts a CUE position to a workspace-relative one. Positions in the
// embedded schema are reported as belonging to it.
func (c *collector) pos(p token.Pos) Pos {
	if !p.IsValid() {
		return Pos{}
	}
	name := p.Filename()
	if rel, err := filepath.Rel(c.dir, name); err == nil && !strings.HasPrefix(rel, "..") {
		name = filepath.ToSlash(rel)
	}
	return Pos{File: name, Line: p.Line(), Col: p.Column()}
}

func isSchemaFile(name string) bool {
	return strings.Contains(filepath.ToSlash(name), "cue.mod/pkg/strata.build/strata/") || strings.HasPrefix(name, schemaFilename)
}

// addCUE converts a CUE error (possibly a list) into positioned errors. It leads with
// the position inside the user's files, then the path, then CUE's reason.
func (c *collector) addCUE(err error, fallbackPath string) {
	for _, e := range cueerrors.Errors(err) {
		path := cuePathString(e.Path())
		if path == "" {
			path = fallbackPath
		}
		c.add(c.userPos(e, path), path, "%s", cleanMsg(e))
	}
}

func (c *collector) userPos(e cueerrors.Error, path string) Pos {
	cands := append([]token.Pos{e.Position()}, e.InputPositions()...)
	for _, p := range cands {
		if p.IsValid() && !isSchemaFile(p.Filename()) {
			return c.pos(p)
		}
	}
	if p, ok := c.index.lookupNearest(path); ok {
		return p
	}
	for _, p := range cands {
		if p.IsValid() {
			return c.pos(p)
		}
	}
	return Pos{File: "."}
}

func cleanMsg(e cueerrors.Error) string {
	format, args := e.Msg()
	msg := fmt.Sprintf(format, args...)
	msg = strings.TrimSuffix(msg, ":")
	if strings.Contains(msg, "empty disjunction") {
		// CUE lists one conflict per alternative; say it once.
		msg = "value does not match any allowed alternative"
	}
	return msg
}

// cuePathString renders CUE's path elements as images.base.stages[2].options.
func cuePathString(elems []string) string {
	var b strings.Builder
	for _, el := range elems {
		if u, err := strconv.Unquote(el); err == nil {
			el = u
		} else if _, err := strconv.Atoi(el); err == nil {
			b.WriteString("[" + el + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(el)
	}
	return b.String()
}

func (c *collector) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	sort.SliceStable(c.errs, func(i, j int) bool {
		a, b := c.errs[i].Pos, c.errs[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return c.errs
}

func cueErrors(err error) []cueerrors.Error { return cueerrors.Errors(err) }
