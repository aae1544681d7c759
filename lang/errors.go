package lang

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"cuelang.org/go/cue"
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
	// raw is the user's value before it is unified with the schema.
	raw cue.Value
	// value is the user's value unified with the schema.
	value cue.Value
	// suppress lists paths already reported in strata's words; CUE's errors at
	// or under them are dropped.
	suppress []string
	// fallback is the start of the user's first spec file.
	fallback Pos
	// suffix is appended to every message (the template record an instance
	// comes from, while instances are decoded).
	suffix string
}

// suppressReported adds the path of every error reported so far to suppress: a
// later phase that meets the same problem (decoding a value that failed
// validation) would report it again, often in other words.
func (c *collector) suppressReported() {
	for _, e := range c.errs {
		if e.Path != "" {
			c.suppress = append(c.suppress, e.Path)
		}
	}
}

// reportedUnder reports whether an error was reported at or under path.
func (c *collector) reportedUnder(path string) bool {
	for _, e := range c.errs {
		if under(e.Path, path) {
			return true
		}
	}
	return false
}

func (c *collector) add(pos Pos, path, format string, args ...any) {
	if (pos.File == "" || pos.File == "." || isSchemaFile(pos.File)) && c.fallback.File != "" {
		// Nothing the user wrote is known for this error (a value only the
		// schema spells out, reached through an embedding): the user's first
		// file is still more useful than the schema's lines.
		pos = c.fallback
	}
	msg := fmt.Sprintf(format, args...) + c.suffix
	if c.dir != "" {
		// CUE names files by their absolute path in some messages.
		msg = strings.ReplaceAll(msg, c.dir+string(filepath.Separator), "")
	}
	e := &Error{Pos: pos, Path: path, Msg: oneLine(msg)}
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
	var items []*item
	for _, e := range cueerrors.Errors(err) {
		elems := e.Path()
		path := cuePathString(elems)
		if f, _ := e.Msg(); f == "import failed" {
			elems, path = nil, "" // CUE's path is the importing package's
		}
		if path == "" {
			path = fallbackPath
		}
		items = append(items, &item{e: e, path: path, pos: c.userPos(e, path), have: c.have(elems), known: siblings(c.value, elems)})
	}
	c.addItems(items)
}

// siblings returns the names of the fields (optional ones too) of the struct that
// holds the field at the CUE path elems, in root: what an unknown field's name
// may have meant.
func siblings(root cue.Value, elems []string) func() []string {
	return func() []string {
		if !root.Exists() || len(elems) == 0 {
			return nil
		}
		var out []string
		for _, f := range fieldsOpt(lookupElems(root, elems[:len(elems)-1])) {
			out = append(out, f)
		}
		return out
	}
}

// fieldsOpt lists the names of v's regular and optional fields.
func fieldsOpt(v cue.Value) []string {
	it, err := v.Fields(cue.Optional(true))
	if err != nil {
		return nil
	}
	var out []string
	for it.Next() {
		if name, ok := labelName(it.Selector()); ok {
			out = append(out, name)
		}
	}
	return out
}

// labelName is a regular or optional field's name; other selectors (patterns,
// definitions, hidden fields) have none a user could have meant.
func labelName(sel cue.Selector) (string, bool) {
	if sel.LabelType() != cue.StringLabel || sel.ConstraintType() >= cue.PatternConstraint {
		return "", false
	}
	return sel.Unquoted(), true
}

// have returns the user's own value (before the schema) at the CUE path elems, if
// the user wrote the field: a missing field is reported as missing, not as
// incomplete.
func (c *collector) have(elems []string) func() (cue.Value, bool) {
	return func() (cue.Value, bool) {
		if !c.raw.Exists() || len(elems) == 0 {
			return cue.Value{}, true
		}
		v := lookupElems(c.raw, elems)
		return v, v.Exists()
	}
}

// lookupElems looks up a path given as CUE's error path elements.
func lookupElems(v cue.Value, elems []string) cue.Value {
	sels := make([]cue.Selector, 0, len(elems))
	for _, el := range elems {
		switch {
		case strings.HasPrefix(el, "#"):
			sels = append(sels, cue.Def(el))
		default:
			if u, err := strconv.Unquote(el); err == nil {
				sels = append(sels, cue.Str(u))
			} else if n, err := strconv.Atoi(el); err == nil {
				sels = append(sels, cue.Index(n))
			} else {
				sels = append(sels, cue.Str(el))
			}
		}
	}
	return v.LookupPath(cue.MakePath(sels...))
}

// item is one CUE error on its way to becoming an Error.
type item struct {
	e    cueerrors.Error
	path string
	pos  Pos
	msg  string                   // set when the message was rewritten
	have func() (cue.Value, bool) // the user's value, if the user wrote the field
	// known lists the fields allowed beside the one in error, for suggestions.
	known func() []string
	drop  bool
}

func (it *item) format() (string, []any) { return it.e.Msg() }

func (it *item) isDisj() bool {
	f, _ := it.format()
	return strings.Contains(f, "empty disjunction")
}

func (it *item) is(prefix string) bool {
	f, _ := it.format()
	return strings.HasPrefix(f, prefix)
}

func under(p, q string) bool {
	return p == q || strings.HasPrefix(p, q+".") || strings.HasPrefix(p, q+"[")
}

// addItems simplifies CUE's errors the way a user reads them and adds them. CUE
// reports a failed disjunction as one error for the disjunction plus one per
// alternative (and, for nested disjunctions, the same again one level up): keep
// the innermost disjunction; when an alternative failed deeper inside the value,
// report that failure only; otherwise say once which values were allowed.
func (c *collector) addItems(items []*item) {
	// Suppressed errors take part in the analysis (an alternative that failed
	// on a field reported before still got further than the others) but are
	// not shown.
	disj := map[string]bool{}
	var suppressed []*item
	for _, it := range items {
		for _, p := range c.suppress {
			if under(it.path, p) {
				suppressed = append(suppressed, it)
				break
			}
		}
		if it.isDisj() {
			disj[it.path] = true
		}
	}
	// Nested disjunctions: drop what belongs only to an outer one.
	for _, it := range items {
		for p := range disj {
			if !under(it.path, p) {
				continue
			}
			deeper, inside := false, false
			for q := range disj {
				if q != p && under(q, p) {
					deeper = true
					if under(it.path, q) {
						inside = true
					}
				}
			}
			if deeper && !inside {
				it.drop = true
			}
		}
	}
	for p := range disj {
		var same, below []*item
		real := false
		for _, it := range items {
			if it.drop || !under(it.path, p) {
				continue
			}
			if it.path == p {
				same = append(same, it)
				continue
			}
			below = append(below, it)
			if !it.isDisj() && !it.is("field not allowed") {
				real = true
			}
		}
		if real {
			// An alternative got further: its failure is the one to show.
			for _, it := range same {
				it.drop = true
			}
			for _, it := range below {
				if it.is("field not allowed") {
					it.drop = true
				}
			}
			continue
		}
		if msg, pos, ok := summarizeDisj(same); ok {
			for _, it := range same {
				it.drop = true
			}
			same[0].drop, same[0].msg, same[0].pos = false, msg, pos
		}
	}
	for _, it := range suppressed {
		it.drop = true
	}
	for _, it := range items {
		if it.drop {
			continue
		}
		msg := it.msg
		if msg == "" {
			msg = rewriteMsg(it)
		}
		if isModePath(it.path) {
			msg = octalNumbers(msg)
		}
		if f, _ := it.format(); strings.HasPrefix(f, "conflicting values") {
			msg += c.otherPositions(it)
		}
		c.add(it.pos, it.path, "%s", msg)
	}
}

// otherPositions names where else in the user's files the values of a conflict
// were set (the error is at one of them): " (other value at b.cue:3:24)".
func (c *collector) otherPositions(it *item) string {
	var others []string
	seen := map[Pos]bool{it.pos: true}
	for _, p := range append([]token.Pos{it.e.Position()}, it.e.InputPositions()...) {
		if !p.IsValid() || isSchemaFile(p.Filename()) {
			continue
		}
		// A position on the error's own line is the same field's label or value.
		if pos := c.pos(p); !seen[pos] && (pos.File != it.pos.File || pos.Line != it.pos.Line) {
			seen[pos] = true
			others = append(others, pos.String())
		}
	}
	switch len(others) {
	case 0:
		return ""
	case 1:
		return " (other value at " + others[0] + ")"
	}
	sort.Strings(others)
	return " (other values at " + strings.Join(others, ", ") + ")"
}

// isModePath reports whether path names a file mode, which people read in octal.
func isModePath(path string) bool {
	return path == "mode" || strings.HasSuffix(path, ".mode")
}

var decimal = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\b[0-9]+\b`) })

// octalNumbers writes the integers of a message about a mode in octal (0o755).
// Quoted text is the user's own (mode: "0644" is a string, not a number) and
// is left as written.
func octalNumbers(msg string) string {
	var b strings.Builder
	for len(msg) > 0 {
		q := strings.IndexByte(msg, '"')
		if q < 0 {
			b.WriteString(octalRun(msg))
			break
		}
		b.WriteString(octalRun(msg[:q]))
		end := q + 1
		for end < len(msg) && msg[end] != '"' {
			if msg[end] == '\\' {
				end++
			}
			end++
		}
		end = min(end+1, len(msg))
		b.WriteString(msg[q:end])
		msg = msg[end:]
	}
	return b.String()
}

// octalRun is octalNumbers of text with no quotes.
func octalRun(s string) string {
	return decimal().ReplaceAllStringFunc(s, func(d string) string {
		n, err := strconv.ParseUint(d, 10, 32)
		if err != nil || n == 0 {
			return d
		}
		return fmt.Sprintf("0o%o", n)
	})
}

// summarizeDisj turns the per-alternative conflicts of one disjunction into one
// message: the value the user wrote and the values allowed.
func summarizeDisj(same []*item) (string, Pos, bool) {
	count := map[string]int{}
	var pairs [][2]string
	var pos Pos
	for _, it := range same {
		f, args := it.format()
		var a, b string
		switch {
		case strings.HasPrefix(f, "conflicting values %s and %s") && len(args) >= 2:
			a, b = shortArg(args[0]), shortArg(args[1])
		case strings.HasPrefix(f, "invalid value %v (out of bound %s)") && len(args) >= 2:
			a, b = shortArg(args[1]), shortArg(args[0])
		default:
			continue
		}
		if pos == (Pos{}) {
			pos = it.pos
		}
		pairs = append(pairs, [2]string{a, b})
		count[a]++
		if b != a {
			count[b]++
		}
	}
	if len(pairs) < 2 {
		return "", Pos{}, false
	}
	// The user's value is the one every conflict shares.
	var user string
	for v, n := range count {
		if n == len(pairs) {
			if user != "" {
				return "", Pos{}, false
			}
			user = v
		}
	}
	if user == "" {
		return "", Pos{}, false
	}
	var allowed []string
	seen := map[string]bool{}
	bounded := false
	for _, p := range pairs {
		alt := p[0]
		if alt == user {
			alt = p[1]
		}
		if !seen[alt] {
			seen[alt] = true
			allowed = append(allowed, alt)
			bounded = bounded || strings.HasPrefix(alt, "<") || strings.HasPrefix(alt, ">") || alt == "int" || alt == "number" || alt == "float"
		}
	}
	if bounded {
		// A number beside a bound or a number type is the default within it
		// (mode: <=0o7777 | *0o755): it says nothing about what is allowed.
		allowed = slices.DeleteFunc(allowed, func(a string) bool {
			_, err := strconv.ParseFloat(a, 64)
			return err == nil
		})
	}
	if len(allowed) == 1 {
		return fmt.Sprintf("%s is not allowed here (want %s)", user, allowed[0]), pos, true
	}
	return fmt.Sprintf("%s is not allowed here (want one of: %s)", user, strings.Join(allowed, ", ")), pos, true
}

// shortArg renders one argument of a CUE message on one short line: a message
// quotes values, never a whole struct.
func shortArg(a any) string {
	s := oneLine(fmt.Sprint(a))
	if r := []rune(s); len(r) > 60 {
		s = string(r[:57]) + "…"
	}
	return s
}

func shortArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch a.(type) {
		case int, int64, uint64, float64, bool:
			out[i] = a
		default:
			if _, ok := a.(fmt.Stringer); ok {
				out[i] = shortArg(a)
			} else {
				out[i] = a
			}
		}
	}
	return out
}

// nameSections are the top-level maps keyed by #Name.
var nameSections = map[string]string{
	"sources": "source", "resources": "resource", "images": "image",
	"jobs": "job", "templates": "template", "hooks": "hook",
}

// rewriteMsg says what CUE says in the words of a strata user.
func rewriteMsg(it *item) string {
	f, args := it.format()
	switch {
	case strings.HasPrefix(f, "incomplete value") && len(args) == 1:
		want := fmt.Sprint(args[0])
		if it.have != nil {
			v, ok := it.have()
			if !ok {
				return fmt.Sprintf("missing required field (want %s)", want)
			}
			// Show what the user wrote (string) rather than what is left of the
			// schema's constraint (!="").
			if v.Exists() && v.Err() == nil {
				if s := oneLine(fmt.Sprint(v)); len(s) <= 80 {
					want = s
				}
			}
		}
		return fmt.Sprintf("incomplete value %s: a concrete value is needed here", want)
	case f == "field not allowed":
		if elems := it.e.Path(); len(elems) == 2 {
			if kind, ok := nameSections[elems[0]]; ok {
				return invalidNameMsg(kind, lastElem(elems))
			}
		}
		if el := lastElem(it.e.Path()); el != "" {
			var known []string
			if it.known != nil {
				known = it.known()
			}
			return fmt.Sprintf("field %q is not allowed here%s", el, didYouMean(el, known))
		}
	case f == "import failed":
		return importFailedMsg(it.e.Error())
	case strings.HasPrefix(f, "incompatible list lengths") && strings.HasSuffix(it.path, "command") && len(args) == 2 && fmt.Sprint(args[0]) == "0":
		return "command must not be empty: the first element is the program to run"
	}
	return cleanMsg(it.e)
}

var cannotFindPackage = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`cannot find package "([^"]+)"`) })

// importFailedMsg names the import that failed: CUE's message names the package
// that imports it.
func importFailedMsg(detail string) string {
	m := cannotFindPackage().FindStringSubmatch(detail)
	if m == nil {
		_, reason, _ := strings.Cut(detail, "import failed: ")
		return "import failed: " + strings.TrimSuffix(reason, ":")
	}
	return fmt.Sprintf("import %q failed: no such package (strata serves strata.build/strata; other packages must be under cue.mod/ or in the workspace's module)", m[1])
}

func lastElem(elems []string) string {
	if len(elems) == 0 {
		return ""
	}
	el := elems[len(elems)-1]
	if u, err := strconv.Unquote(el); err == nil {
		return u
	}
	return el
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
	msg := fmt.Sprintf(format, shortArgs(args)...)
	if len(args) == 0 && strings.Contains(format, "%") {
		// A wrapped error whose message is all in its chain ("%s").
		msg = e.Error()
	}
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
			if !plainLabel(el) {
				el = strconv.Quote(el)
			}
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

// plainLabel reports whether a label reads unambiguously unquoted in a path:
// names (images.fleet-x86-nuc), stage types (acme.motd) and file paths
// (files./etc/motd) do; labels with spaces or other punctuation are quoted.
func plainLabel(s string) bool {
	if s == "" || strings.HasPrefix(s, ".") || strings.HasSuffix(s, "/") || strings.HasSuffix(s, ".") ||
		strings.Contains(s, "//") || strings.Contains(s, "/.") || strings.Contains(s, "..") {
		// Quoted, so that a bad name (a//b, ../x) reads as one label.
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '_', r == '-', r == '.', r == '/', r == '#', r == '$':
		default:
			return false
		}
	}
	return true
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

// oneLine folds a message onto one line: an error is one line of output.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\n\r\t") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

func cueErrors(err error) []cueerrors.Error { return cueerrors.Errors(err) }
