package lang

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	pathpkg "path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/load"
	"cuelang.org/go/cue/token"
	"cuelang.org/go/encoding/json"
	"cuelang.org/go/encoding/yaml"

	schema "github.com/strata-build/strata/cue"
)

// schemaFilename is the stable file name the embedded schema is compiled under, so
// positions inside it are recognisable and never depend on a host path.
const schemaFilename = "strata.build/strata/schema.cue"

// SchemaDir is where the schema module lives inside a workspace's cue.mod, both in
// the loader's overlay and when vendored by `strata mod vendor`.
const SchemaDir = "cue.mod/pkg/strata.build/strata"

// ErrNotWorkspace is returned when a directory has no cue.mod/module.cue.
var ErrNotWorkspace = errors.New("not a strata workspace")

// Load loads, validates and models the workspace in dir. A workspace problem is
// returned as Errors (errors.Is(err, ErrInvalid)), together with as much of the
// workspace as could be modelled (so that `strata expand` can show the templates
// of a workspace whose other parts fail); such a workspace must not be compiled.
// Other errors are I/O failures, with no workspace.
//
// Templates over a resource a job produces are pending unless the job's
// records are given (WithJobRecords).
func Load(ctx context.Context, dir string, opts ...Option) (*Workspace, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("load workspace %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(abs, "cue.mod", "module.cue")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w: cue.mod/module.cue not found (run `strata init`)", dir, ErrNotWorkspace)
		}
		return nil, fmt.Errorf("load workspace %s: %w", dir, err)
	}
	l := &loader{
		ctx:   cuecontext.New(),
		index: newPosIndex(),
	}
	for _, o := range opts {
		o(&l.opts)
	}
	l.c = &collector{dir: abs, index: l.index}
	ws := &Workspace{
		Dir:          abs,
		Sources:      map[string]*Source{},
		Resources:    map[string]*Resource{},
		StageModules: map[string]*StageModule{},
		Images:       map[string]*Image{},
		Jobs:         map[string]*Job{},
		Hooks:        map[string]*Hook{},
		Templates:    map[string]*Template{},
	}
	l.ws = ws
	if err := l.load(ctx, abs); err != nil {
		if errors.Is(err, ErrInvalid) {
			return ws, err
		}
		return nil, err
	}
	return ws, nil
}

type loader struct {
	opts    options
	ctx     *cue.Context
	c       *collector
	index   *posIndex
	ws      *Workspace
	schema  cue.Value // the schema package
	value   cue.Value // the workspace unified with #Workspace
	modules map[string]module
	// defined records where each image/job name came from, to report collisions.
	defined map[string]string
	// partial holds the images and jobs that did not decode, as far as their
	// fields decode one by one, so that their references are checked too.
	partial struct {
		Images map[string]*Image
		Jobs   map[string]*Job
	}
	// recordKeys holds every key of the template record being instantiated, at
	// any depth; nil outside an instance.
	recordKeys map[string]bool
	// badModules holds the user stage types whose name is invalid.
	badModules map[string]bool
	// nameRE is the schema's #NamePattern, anchored.
	nameRE *regexp.Regexp
	// failed holds the names (images.x, hooks.y…) that are defined but did not
	// decode; their errors are reported, and references to them are not.
	failed map[string]bool
	// jobRecords holds, per resource a job produces, the records Load was
	// given for it.
	jobRecords map[string]*jobRecords
}

func (l *loader) load(ctx context.Context, dir string) error {
	l.schema = l.ctx.CompileBytes(schema.Schema, cue.Filename(schemaFilename))
	if err := l.schema.Err(); err != nil {
		return fmt.Errorf("embedded schema: %w", err)
	}
	pat, err := l.schema.LookupPath(cue.ParsePath("#NamePattern")).String()
	if err != nil {
		return fmt.Errorf("embedded schema: #NamePattern: %w", err)
	}
	if l.nameRE, err = regexp.Compile("^(?:" + pat + ")$"); err != nil {
		return fmt.Errorf("embedded schema: #NamePattern: %w", err)
	}
	v, err := l.build(dir)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	l.c.raw = v
	l.badModules = map[string]bool{}
	l.checkSourceKinds()
	l.checkStageTypeNames()
	l.value = v.Unify(l.schema.LookupPath(cue.ParsePath("#Workspace")))
	l.c.value = l.value
	// Every phase runs even when an earlier one found errors, so that one run
	// reports every problem; what a phase reported, later phases do not report
	// again in other words (see suppressReported).
	if err := l.value.Validate(); err != nil {
		l.c.addCUE(err, "")
	}
	l.c.suppressReported()
	for _, sec := range []string{"sources", "resources", "images", "jobs", "hooks"} {
		v := l.value.LookupPath(cue.ParsePath(sec))
		if !v.Exists() {
			continue
		}
		if sec == "resources" {
			l.validateResources(v)
			continue
		}
		if err := v.Validate(cue.Concrete(true)); err != nil {
			l.c.addCUE(err, sec)
		}
	}
	l.c.suppressReported()
	l.failed = map[string]bool{}
	l.partial.Images, l.partial.Jobs = map[string]*Image{}, map[string]*Job{}
	l.decodeModules()
	l.decodeSources()
	l.decodeResources()
	l.decodeHooks()
	l.defined = map[string]string{}
	l.decodeImages()
	l.decodeJobs()
	if err := ctx.Err(); err != nil {
		return err
	}
	l.expandTemplates()
	l.markResourceJobs()
	if err := ctx.Err(); err != nil {
		return err
	}
	// Check references even when some elements failed to decode, so that one run
	// reports every problem; what failed counts as defined (see exists).
	l.checkReferences()
	l.checkCycles()
	l.checkUserGroups()
	l.checkNestedImages()
	l.warn()
	return l.c.err()
}

// build loads the package's CUE files, with the schema module served from the
// embedded copy, and unifies any .json/.yaml spec files into it.
func (l *loader) build(dir string) (cue.Value, error) {
	if !l.checkFiles(dir) {
		return cue.Value{}, l.c.err()
	}
	overlay := map[string]load.Source{
		filepath.Join(dir, SchemaDir, "schema.cue"): load.FromBytes(schema.Schema),
	}
	insts := load.Instances([]string{"."}, &load.Config{Dir: dir, Overlay: overlay, DataFiles: true})
	if len(insts) != 1 {
		return cue.Value{}, fmt.Errorf("load %s: expected one package, found %d", dir, len(insts))
	}
	inst := insts[0]
	var v cue.Value
	var data []*build.File
	if inst.Err != nil {
		var nf *load.NoFilesError
		if !errors.As(inst.Err, &nf) {
			l.c.addCUE(inst.Err, "")
			return cue.Value{}, l.c.err()
		}
		// A workspace of .json/.yaml files only.
		v = l.ctx.CompileString("{}")
		data = jsonYAMLFiles(dir)
	} else {
		for _, f := range inst.Files {
			if !isSchemaFile(f.Filename) {
				l.setFallback(f.Filename)
				l.index.addFile(l.c, f.Decls)
			}
		}
		v = l.ctx.BuildInstance(inst)
		data = inst.OrphanedFiles
	}
	l.c.value = v
	if err := v.Err(); err != nil {
		l.c.addCUE(err, "")
		return cue.Value{}, l.c.err()
	}
	for _, f := range data {
		dv, ok := l.buildDataFile(f.Filename)
		if ok {
			v = v.Unify(dv)
		}
	}
	if err := l.c.err(); err != nil {
		return cue.Value{}, err
	}
	return v, nil
}

// checkFiles refuses, before CUE reads them, spec files CUE cannot load or
// should not: a name with ':' or '\\' (CUE's loader refuses it with a bare
// "invalid io/fs path", and such a name printed before an error reads as a
// position), and a .cue file that is not UTF-8 (CUE takes invalid bytes in a
// string as they are).
func (l *loader) checkFiles(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return true // the loader says what is wrong
	}
	ok := true
	for _, e := range entries {
		name := e.Name()
		switch filepath.Ext(name) {
		case ".cue", ".json", ".yaml", ".yml":
		default:
			continue
		}
		if strings.ContainsAny(name, ":\\") || !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) {
			l.c.add(Pos{File: "."}, "", "spec file %q: CUE cannot load a file whose name holds ':', '\\' or control characters; rename it", name)
			ok = false
			continue
		}
		if filepath.Ext(name) != ".cue" || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue // the loader says what is wrong
		}
		if pos, off, bad := invalidUTF8(name, b); bad {
			l.c.add(pos, "", "invalid UTF-8 (byte %#02x): spec files are UTF-8 text", b[off])
			ok = false
		}
	}
	return ok
}

// invalidUTF8 returns the position and offset of the first byte of b that is
// not UTF-8.
func invalidUTF8(name string, b []byte) (Pos, int, bool) {
	line, col := 1, 1
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return Pos{File: name, Line: line, Col: col}, i, true
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col += n
		}
		i += n
	}
	return Pos{}, 0, false
}

func jsonYAMLFiles(dir string) []*build.File {
	var out []*build.File
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".json", ".yaml", ".yml":
			out = append(out, &build.File{Filename: filepath.Join(dir, e.Name())})
		}
	}
	return out
}

// setFallback records the first spec file, where errors go that nothing the user
// wrote can be found for.
func (l *loader) setFallback(name string) {
	if l.c.fallback.File == "" {
		l.c.fallback = l.c.pos0(name)
		l.c.fallback.Line, l.c.fallback.Col = 1, 1
	}
}

func (l *loader) buildDataFile(name string) (cue.Value, bool) {
	l.setFallback(name)
	rel := l.c.pos0(name)
	b, err := os.ReadFile(name)
	if err != nil {
		l.c.add(rel, "", "read spec file: %v", err)
		return cue.Value{}, false
	}
	if pos, off, bad := invalidUTF8(rel.File, b); bad {
		l.c.add(pos, "", "invalid UTF-8 (byte %#02x): spec files are UTF-8 text", b[off])
		return cue.Value{}, false
	}
	var v cue.Value
	switch filepath.Ext(name) {
	case ".json":
		expr, err := json.Extract(name, b)
		if err != nil {
			l.c.addCUE(err, "")
			return cue.Value{}, false
		}
		var decls []ast.Decl
		if st, ok := expr.(*ast.StructLit); ok {
			decls = st.Elts
		}
		if !l.isSpecFile(rel, decls) {
			return cue.Value{}, false
		}
		l.index.addExpr(l.c, expr)
		v = l.ctx.BuildExpr(expr)
	case ".yaml", ".yml":
		f, err := yaml.Extract(name, b)
		if err != nil {
			l.c.addCUE(err, "")
			return cue.Value{}, false
		}
		if !l.isSpecFile(rel, f.Decls) {
			return cue.Value{}, false
		}
		l.index.addFile(l.c, f.Decls)
		v = l.ctx.BuildFile(f)
	default:
		return cue.Value{}, false
	}
	if err := v.Err(); err != nil {
		l.c.addCUE(err, "")
		return cue.Value{}, false
	}
	return v, true
}

// workspaceFields are the top-level fields of #Workspace.
var workspaceFields = map[string]bool{
	"sources": true, "resources": true, "stages": true, "images": true,
	"jobs": true, "templates": true, "hooks": true,
}

// isSpecFile reports whether a .json/.yaml file is part of the spec: an object
// whose every top-level key is a workspace field. Anything else in the directory
// (a plan written by `strata compile -o plan.json`, a package.json, editor
// settings) is left alone, with a warning naming the key that disqualified it.
func (l *loader) isSpecFile(pos Pos, decls []ast.Decl) bool {
	if len(decls) == 0 {
		l.ws.Warnings = append(l.ws.Warnings, Warning{Pos: pos, Msg: "ignored: not a strata spec file (its top level is not an object of workspace fields)"})
		return false
	}
	for _, d := range decls {
		f, ok := d.(*ast.Field)
		if !ok {
			l.ws.Warnings = append(l.ws.Warnings, Warning{Pos: pos, Msg: "ignored: not a strata spec file (its top level is not an object)"})
			return false
		}
		name, _, err := ast.LabelName(f.Label)
		if err != nil || !workspaceFields[name] {
			l.ws.Warnings = append(l.ws.Warnings, Warning{Pos: l.c.pos(f.Label.Pos()), Msg: fmt.Sprintf(
				"ignored: not a strata spec file (top-level key %q is not one of images, jobs, hooks, sources, resources, stages, templates)", name)})
			return false
		}
	}
	return true
}

// pos0 is the position of a whole file.
func (c *collector) pos0(name string) Pos {
	if rel, err := filepath.Rel(c.dir, name); err == nil {
		name = filepath.ToSlash(rel)
	}
	return Pos{File: name}
}

// fields returns the regular fields of the struct at path, in order.
func fields(v cue.Value) []field {
	it, err := v.Fields()
	if err != nil {
		return nil
	}
	var out []field
	for it.Next() {
		if name, ok := labelName(it.Selector()); ok {
			out = append(out, field{name: name, v: it.Value()})
		}
	}
	return out
}

type field struct {
	name string
	v    cue.Value
}

func (l *loader) lookup(path string) cue.Value {
	return l.value.LookupPath(cue.ParsePath(path))
}

// sel builds a CUE path from a dotted prefix and a label that may need quoting.
func sel(prefix, label string) string {
	return prefix + "." + cue.MakePath(cue.Str(label)).String()
}

// checkSourceKinds reports a source that is not exactly one of the three kinds
// where the user wrote it: CUE's own report of the #Source disjunction is one
// "field not allowed" per alternative. CUE's errors under such a source are
// dropped.
func (l *loader) checkSourceKinds() {
	for _, f := range fields(l.c.raw.LookupPath(cue.ParsePath("sources"))) {
		if f.v.IncompleteKind() != cue.StructKind {
			continue
		}
		have := written(f.v)
		var kinds []string
		for _, k := range []string{"url", "path", "git"} {
			if have[k] {
				kinds = append(kinds, k)
			}
		}
		if len(kinds) == 1 {
			continue
		}
		path := "sources." + f.name
		msg := "a source needs one of url (with sha256), path, or git (with commit)"
		if len(kinds) > 1 {
			msg = fmt.Sprintf("a source is exactly one of url (with sha256), path, or git (with commit), not %s", strings.Join(kinds, " and "))
		}
		l.c.add(l.index.at(path, Pos{File: "."}), path, "%s", msg)
		l.c.suppress = append(l.c.suppress, path)
	}
}

// written returns the fields of a struct the user wrote, leaving out what the
// schema adds. Under an embedded strata.#Workspace CUE opens the schema's
// definitions (an embedding opens them recursively, cue-lang/cue#1576), so a
// source is still the unresolved disjunction of #Source's alternatives, each
// unified with the user's fields, and looking a field up in it finds nothing: the
// user's fields are those of the conjuncts that do not come from the schema.
func written(v cue.Value) map[string]bool {
	out := map[string]bool{}
	conjuncts := []cue.Value{v}
	if op, args := v.Expr(); op == cue.AndOp {
		conjuncts = args
	}
	for _, c := range conjuncts {
		if isSchemaFile(c.Pos().Filename()) {
			continue
		}
		for _, f := range fields(c) {
			out[f.name] = true
		}
	}
	return out
}

// decodeFields is decodeKnown keeping what decodes: a field that does not is
// left zero, and no error is reported.
func decodeFields(v cue.Value, x any) {
	rv := reflect.ValueOf(x).Elem()
	for _, f := range knownFields(rv.Type()) {
		if fv := v.LookupPath(f.path); fv.Exists() {
			dst := rv.FieldByIndex(f.index)
			if err := fv.Decode(dst.Addr().Interface()); err != nil {
				dst.SetZero()
			}
		}
	}
}

// errReported stands for errors already reported at or under a path.
var errReported = errors.New("reported")

// decodeChecked decodes v into x, unless an error was reported under path (the
// value failed validation, and decoding it would report the same problem again);
// a decoding error is reported.
func (l *loader) decodeChecked(v cue.Value, path string, x any) error {
	if l.c.reportedUnder(path) {
		return errReported
	}
	if err := decodeKnown(v, x); err != nil {
		l.c.addCUE(err, path)
		return err
	}
	return nil
}

// decodeKnown is v.Decode(x) for a struct x whose fields are json-tagged
// (embedded structs are decoded into as well): each field is looked up by
// name and decoded, where Value.Decode iterates v's fields, which CUE sorts
// topologically every time (a tenth of a compile, for every image and stage).
// Errors are collected as Decode collects them.
func decodeKnown(v cue.Value, x any) error {
	v, _ = v.Default()
	if err := v.Err(); err != nil && !cue.IsIncomplete(err) {
		return err
	}
	var errs cueerrors.Error
	rv := reflect.ValueOf(x).Elem()
	for _, f := range knownFields(rv.Type()) {
		fv := v.LookupPath(f.path)
		if !fv.Exists() {
			continue
		}
		dst := rv.FieldByIndex(f.index)
		if err := fv.Decode(dst.Addr().Interface()); err != nil {
			errs = cueerrors.Append(errs, cueerrors.Promote(err, ""))
		}
	}
	if errs != nil {
		return errs
	}
	return nil
}

// knownField is a json-tagged field of a struct decodeKnown and decodeFields
// fill, embedded structs' included.
type knownField struct {
	path  cue.Path
	index []int
}

var knownFieldsOf sync.Map // reflect.Type → []knownField

func knownFields(t reflect.Type) []knownField {
	if fs, ok := knownFieldsOf.Load(t); ok {
		return fs.([]knownField)
	}
	var fs []knownField
	for _, f := range reflect.VisibleFields(t) {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous || !f.IsExported() || name == "" || name == "-" {
			continue
		}
		fs = append(fs, knownField{cue.MakePath(cue.Str(name)), f.Index})
	}
	knownFieldsOf.Store(t, fs)
	return fs
}

func (l *loader) decodeSources() {
	for _, f := range fields(l.lookup("sources")) {
		path := "sources." + f.name
		s := &Source{Name: f.name, Pos: l.index.at(path, Pos{})}
		if l.c.reportedUnder(path) {
			l.failed[path] = true
			continue
		}
		if err := f.v.Decode(s); err != nil {
			l.c.addCUE(err, path)
			l.failed[path] = true
			continue
		}
		s.Name, s.Pos = f.name, l.index.at(path, Pos{})
		if s.Path != "" {
			if filepath.IsAbs(s.Path) || strings.HasPrefix(filepath.Clean(s.Path), "..") {
				l.c.add(l.index.at(path+".path", s.Pos), path+".path", "path %q must be relative and inside the workspace", s.Path)
			}
		}
		l.ws.Sources[f.name] = s
	}
}

func (l *loader) decodeResources() {
	l.jobRecords = map[string]*jobRecords{}
	for _, f := range fields(l.lookup("resources")) {
		path := "resources." + f.name
		r := &Resource{Name: f.name, Pos: l.index.at(path, Pos{})}
		if f.v.IncompleteKind() == cue.ListKind {
			it, _ := f.v.List()
			for it.Next() {
				b, err := it.Value().MarshalJSON()
				if err != nil {
					l.c.addCUE(err, path)
					continue
				}
				r.Records = append(r.Records, b)
			}
		} else {
			job, _ := f.v.LookupPath(cue.ParsePath("job")).String()
			r.Job = job
			schema := f.v.LookupPath(cue.ParsePath("schema"))
			if schema.Exists() {
				r.Schema = canonicalSource(schema)
			}
			if data, ok := l.opts.records[job]; ok && job != "" && !l.c.reportedUnder(path) {
				l.jobRecords[f.name] = l.parseJobRecords(r, schema, data)
			} else {
				r.Pending = true
			}
		}
		l.ws.Resources[f.name] = r
	}
}

// validateResources checks that every resource is concrete but for a job
// resource's schema, which is a schema: incomplete by nature (name: string).
func (l *loader) validateResources(v cue.Value) {
	for _, f := range fields(v) {
		check := f.v
		if f.v.IncompleteKind() != cue.ListKind {
			check = f.v.LookupPath(cue.ParsePath("job"))
			if !check.Exists() {
				check = f.v
			}
		}
		if err := check.Validate(cue.Concrete(true)); err != nil {
			l.c.addCUE(err, "resources."+f.name)
		}
	}
}

// markResourceJobs makes every resource's job list RecordsFile among its
// outputs: the executor then fails the job when it did not write its records,
// naming the file, rather than a later step finding nothing to read.
func (l *loader) markResourceJobs() {
	for _, name := range sortedKeys(l.ws.Resources) {
		r := l.ws.Resources[name]
		if j := l.ws.Jobs[r.Job]; j != nil && !slices.Contains(j.Outputs, RecordsFile) {
			j.Outputs = append(j.Outputs, RecordsFile)
		}
	}
}

func (l *loader) decodeHooks() {
	for _, f := range fields(l.lookup("hooks")) {
		path := "hooks." + f.name
		h := &Hook{}
		if l.c.reportedUnder(path) {
			l.failed[path] = true
			continue
		}
		if err := f.v.Decode(h); err != nil {
			l.c.addCUE(err, path)
			l.failed[path] = true
			continue
		}
		h.Name, h.Pos = f.name, l.index.at(path, Pos{})
		var rl rawLimits
		if err := f.v.Decode(&rl); err != nil {
			l.c.addCUE(err, path)
			l.failed[path] = true
			continue
		}
		var ok bool
		if h.Limits, ok = l.decodeLimits(rl, path, path, h.Pos); !ok {
			l.failed[path] = true
			continue
		}
		l.ws.Hooks[f.name] = h
	}
}

func (l *loader) decodeImages() {
	for _, f := range fields(l.lookup("images")) {
		path := "images." + f.name
		img := l.decodeImage(f.name, f.v, path, path)
		if img == nil {
			l.failed[path] = true
			continue
		}
		l.defined[path] = "images." + f.name + " at " + img.Pos.String()
		l.ws.Images[f.name] = img
	}
}

// rawImage is the part of an image decoded directly from CUE; stages need their
// options checked against their type first.
type rawImage struct {
	Version     string            `json:"version"`
	Platform    Platform          `json:"platform"`
	DeviceTypes []string          `json:"device_types"`
	Default     bool              `json:"default"`
	BuildRoot   string            `json:"buildroot"`
	From        string            `json:"from"`
	Outputs     []Output          `json:"outputs"`
	Publish     *Publish          `json:"publish"`
	Hooks       []string          `json:"hooks"`
	Requires    *Capabilities     `json:"requires"`
	Runtime     []string          `json:"runtime"`
	Annotations map[string]string `json:"annotations"`
}

// maxImageSegment bounds a segment of an image name: the last names the
// image's output files (NAME.squashfs) and their temporaries beside them
// (.NAME.squashfs.tmp-<26 characters>), all within a file name's 255 bytes. A
// 250-byte name from a record passed vet and failed the build with "file name
// too long".
const maxImageSegment = 200

// decodeImage models one image. path names it for errors (images.NAME); posPath is
// where its lines are in the index (the template's lines for an instance).
func (l *loader) decodeImage(name string, v cue.Value, path, posPath string) *Image {
	for _, seg := range strings.Split(name, "/") {
		if len(seg) > maxImageSegment {
			l.c.add(l.index.at(posPath, Pos{File: "."}), path, "image name %q…: a segment is %d bytes, over %d (the names of its outputs' files must fit in 255)", seg[:40], len(seg), maxImageSegment)
			return nil
		}
	}
	var raw rawImage
	if err := l.decodeChecked(v, path, &raw); err != nil {
		// What decodes is kept aside: its stages are still checked, and its
		// references too, for their own errors.
		decodeFields(v, &raw)
		img := &Image{
			Name: name, BuildRoot: cmp.Or(raw.BuildRoot, "host"), From: raw.From, Hooks: raw.Hooks,
			Runtime: raw.Runtime, Pos: l.index.at(posPath, Pos{File: "."}),
		}
		it, _ := v.LookupPath(pathStages).List()
		for i := 0; it.Next(); i++ {
			if st, ok := l.decodeStage(it.Value(), fmt.Sprintf("%s.stages[%d]", path, i), fmt.Sprintf("%s.stages[%d]", posPath, i)); ok {
				img.Stages = append(img.Stages, st)
			}
		}
		l.partial.Images[name] = img
		return nil
	}
	if raw.Outputs == nil {
		// Not a CUE default: a list-valued default is a disjunction, and CUE's
		// report of an output that fails #Output would then be the default's
		// conflict ("tree" vs "tar") instead of the output's own error.
		raw.Outputs = []Output{{Type: "tree"}}
	}
	img := &Image{
		Name: name, Version: raw.Version, Platform: raw.Platform, DeviceTypes: raw.DeviceTypes,
		Default: raw.Default, BuildRoot: raw.BuildRoot, From: raw.From, Outputs: raw.Outputs,
		Publish: raw.Publish, Hooks: raw.Hooks, Requires: raw.Requires, Runtime: raw.Runtime,
		Annotations: raw.Annotations, Pos: l.index.at(posPath, Pos{File: "."}),
	}
	if img.DeviceTypes == nil {
		img.DeviceTypes = []string{}
	}
	hookAt := map[string]int{}
	for i, h := range img.Hooks {
		if j, dup := hookAt[h]; dup {
			l.c.add(l.index.at(fmt.Sprintf("%s.hooks[%d]", posPath, i), img.Pos), fmt.Sprintf("%s.hooks[%d]", path, i), "hook %q is already listed at hooks[%d]", h, j)
			continue
		}
		hookAt[h] = i
	}
	seen := map[string]int{}
	for i := range img.Outputs {
		o := &img.Outputs[i]
		o.Pos = l.index.at(fmt.Sprintf("%s.outputs[%d]", posPath, i), img.Pos)
		if o.Name == "" {
			// The last segment: an output is a file of out/<image>/.
			o.Name = pathpkg.Base(name) + "." + o.Type
		}
		if j, dup := seen[o.Name]; dup {
			l.c.add(o.Pos, fmt.Sprintf("%s.outputs[%d]", path, i), "output name %q is already used by outputs[%d]", o.Name, j)
		}
		seen[o.Name] = i
	}
	it, _ := v.LookupPath(pathStages).List()
	for i := 0; it.Next(); i++ {
		st, ok := l.decodeStage(it.Value(), fmt.Sprintf("%s.stages[%d]", path, i), fmt.Sprintf("%s.stages[%d]", posPath, i))
		if ok {
			img.Stages = append(img.Stages, st)
		}
	}
	return img
}

// Paths looked up once per stage: cue.ParsePath runs the CUE parser, so parse
// them once.
var (
	pathOptions = cue.ParsePath("options")
	pathCommand = cue.ParsePath("command")
	pathStages  = cue.ParsePath("stages")
)

type rawStage struct {
	Type    string            `json:"type"`
	Inputs  map[string]string `json:"inputs"`
	Network bool              `json:"network"`
	rawLimits
}

func (l *loader) decodeStage(v cue.Value, path, posPath string) (Stage, bool) {
	var raw rawStage
	if err := l.decodeChecked(v, path, &raw); err != nil {
		return Stage{}, false
	}
	st := Stage{Type: raw.Type, Inputs: raw.Inputs, Network: raw.Network, Pos: l.index.at(posPath, Pos{File: "."})}
	var ok bool
	if st.Limits, ok = l.decodeLimits(raw.rawLimits, path, posPath, st.Pos); !ok {
		return Stage{}, false
	}
	m, ok := l.modules[raw.Type]
	if l.badModules[raw.Type] {
		return Stage{}, false // its name is the error, reported once
	}
	if !ok {
		l.c.add(l.index.at(posPath+".type", st.Pos), path+".type", "unknown stage type %q (known: %s)%s", raw.Type, strings.Join(l.moduleNames(), ", "), didYouMean(raw.Type, l.moduleNames()))
		return Stage{}, false
	}
	opts := v.LookupPath(pathOptions)
	{
		if unknown, known := m.unknownOptions(opts); len(unknown) > 0 {
			for _, name := range unknown {
				p := path + ".options." + name
				l.c.add(l.index.at(posPath+".options."+name, st.Pos), p, "%s", unknownOptionMsg(name, raw.Type, known))
			}
			return Stage{}, false
		}
	}
	if m.info.Builtin && !l.checkImagePaths(raw.Type, opts, path, posPath, st.Pos) {
		return Stage{}, false
	}
	var filled, optV cue.Value
	if m.info.Builtin {
		// A built-in's option schema refers to nothing else in its module: unify
		// the options with it directly instead of filling a copy of the module
		// (the hottest line of a large compile).
		optV = m.value.LookupPath(pathOptions).Unify(opts)
	} else {
		filled = m.value.FillPath(pathOptions, opts)
		optV = filled.LookupPath(pathOptions)
	}
	// MarshalJSON fails wherever Validate(Concrete) would (checked in
	// TestMarshalFailsWhereValidateDoes), so the valid options, nearly all,
	// are evaluated once; Validate runs only to say what is wrong.
	b, err := optV.MarshalJSON()
	if err != nil {
		if verr := optV.Validate(cue.Concrete(true)); verr != nil {
			err = verr
		}
		l.addStageErr(err, v, optV, path, posPath)
		return Stage{}, false
	}
	st.Options = b
	if m.info.Builtin && !l.checkStageOptions(st, path, posPath) {
		return Stage{}, false
	}
	if m.badCommand {
		return Stage{}, false // reported once, at the module's command
	}
	if !m.info.Builtin {
		cmdV := filled.LookupPath(pathCommand)
		if err := cmdV.Decode(&st.Command); err != nil {
			// As for the options: Validate only to explain.
			if verr := cmdV.Validate(cue.Concrete(true)); verr != nil {
				err = verr
			}
			l.addStageErr(err, v, optV, path, posPath)
			return Stage{}, false
		}
	}
	return st, true
}

// addStageErr reports an error from checking a stage's options against its type's
// schema at the user's stage, not at the schema's lines. v is the user's stage.
func (l *loader) addStageErr(err error, v, optV cue.Value, path, posPath string) {
	var items []*item
	for _, e := range cueErrors(err) {
		rel := e.Path()
		found := false
		for i, el := range rel {
			if el == "options" || el == "command" {
				rel, found = rel[i:], true
				break
			}
		}
		if !found {
			// An error of the option value itself (the closed schema's paths are
			// relative to options).
			rel = append([]string{"options"}, rel...)
		}
		sub := cuePathString(rel)
		it := l.relItem(e, v, rel, path+"."+sub, posPath, posPath+"."+sub)
		if rel[0] == "options" {
			it.known = siblings(optV, rel[1:])
		}
		items = append(items, it)
	}
	l.c.addItems(items)
}

// addInstanceErr reports an error in an image or job a template instance defines:
// CUE's paths run through the template (templates.T.each.images.NAME…); the user
// reads images.NAME…, at the template's lines.
func (l *loader) addInstanceErr(err error, v, checked cue.Value, kind, name, full, posPath string) {
	var items []*item
	for _, e := range cueErrors(err) {
		elems := e.Path()
		rel := []string(nil)
		for i := 0; i+1 < len(elems); i++ {
			if elems[i] == kind && lastElem(elems[i:i+2]) == name {
				rel = elems[i+2:]
				break
			}
		}
		sub := cuePathString(rel)
		epath, ppath := full, posPath
		if sub != "" {
			sep := "."
			if strings.HasPrefix(sub, "[") {
				sep = ""
			}
			epath, ppath = full+sep+sub, posPath+sep+sub
		}
		it := l.relItem(e, v, rel, epath, posPath, ppath)
		it.known = siblings(checked, rel)
		items = append(items, it)
	}
	l.c.addItems(items)
}

// relItem positions an error found under a value the user wrote at posPath: at the
// first of CUE's positions inside it, else at the nearest indexed field.
func (l *loader) relItem(e cueerrors.Error, v cue.Value, rel []string, epath, posPath, fieldPath string) *item {
	pos := l.index.at(fieldPath, Pos{File: "."})
	_, literal := l.index.lookup(posPath)
	for _, p := range append([]token.Pos{e.Position()}, e.InputPositions()...) {
		cand := l.c.pos(p)
		// What a comprehension made is not indexed by its name: CUE's own
		// position in the user's files is then the better guess.
		if p.IsValid() && !isSchemaFile(p.Filename()) && (!literal || l.index.within(posPath, cand)) {
			pos = cand
			break
		}
	}
	it := &item{e: e, path: epath, pos: pos, have: func() (cue.Value, bool) {
		if len(rel) == 0 {
			return cue.Value{}, true
		}
		u := lookupElems(v, rel)
		return u, u.Exists()
	}}
	if field, ok := missingField(e); ok && l.recordLacks(field) {
		it.msg = fmt.Sprintf("the record has no field %q, which the template reads here", field)
	}
	return it
}

// unknownOptionMsg says that a stage's option is not one its type declares.
func unknownOptionMsg(name, typ string, known []string) string {
	if len(known) == 0 {
		return fmt.Sprintf("unknown option %q: stage type %s takes no options", name, typ)
	}
	return fmt.Sprintf("unknown option %q for stage type %s (options: %s)%s", name, typ, strings.Join(known, ", "), didYouMean(name, known))
}

type rawJob struct {
	Image     string        `json:"image"`
	BuildRoot string        `json:"buildroot"`
	Command   []string      `json:"command"`
	Needs     []string      `json:"needs"`
	Requires  *Capabilities `json:"requires"`
	Outputs   []string      `json:"outputs"`
	Network   bool          `json:"network"`
	rawLimits
}

func (l *loader) decodeJobs() {
	for _, f := range fields(l.lookup("jobs")) {
		path := "jobs." + f.name
		j := l.decodeJob(f.name, f.v, path, path)
		if j == nil {
			l.failed[path] = true
			continue
		}
		l.defined[path] = path + " at " + j.Pos.String()
		l.ws.Jobs[f.name] = j
	}
}

func (l *loader) decodeJob(name string, v cue.Value, path, posPath string) *Job {
	var raw rawJob
	if err := l.decodeChecked(v, path, &raw); err != nil {
		decodeFields(v, &raw)
		l.partial.Jobs[name] = &Job{
			Name: name, Image: raw.Image, BuildRoot: cmp.Or(raw.BuildRoot, "host"), Needs: raw.Needs,
			Pos: l.index.at(posPath, Pos{File: "."}),
		}
		return nil
	}
	if raw.Needs == nil {
		raw.Needs = []string{}
	}
	pos := l.index.at(posPath, Pos{File: "."})
	lim, ok := l.decodeLimits(raw.rawLimits, path, posPath, pos)
	if !ok {
		return nil
	}
	return &Job{
		Name: name, Image: raw.Image, BuildRoot: raw.BuildRoot, Command: raw.Command,
		Needs: raw.Needs, Requires: raw.Requires, Outputs: raw.Outputs, Network: raw.Network,
		Limits: lim, Pos: pos,
	}
}

// warn adds one warning for every image whose stages run in the host's /usr:
// once per workspace, not once per image.
func (l *loader) warn() {
	var host []string
	for _, name := range sortedKeys(l.ws.Images) {
		img := l.ws.Images[name]
		for _, st := range img.Stages {
			br := img.BuildRoot
			if m := l.ws.StageModules[st.Type]; m != nil && m.BuildRoot != "" {
				br = m.BuildRoot
			}
			if br == "host" {
				host = append(host, "images."+name)
				break
			}
		}
	}
	l.warnDecimalModes()
	if len(host) == 0 {
		return
	}
	first := l.ws.Images[strings.TrimPrefix(host[0], "images.")]
	l.ws.Warnings = append(l.ws.Warnings, Warning{Pos: first.Pos, Msg: NonHermeticMsg(host, len(host))})
}

// warnDecimalModes warns about a mode written as a decimal literal whose
// digits read as octal (mode: 644 is 0o1204, sticky and write-only): people
// write modes in octal, and CUE takes 644 as six hundred and forty-four. It
// reads the literals the position index kept, so it costs no evaluation.
func (l *loader) warnDecimalModes() {
	var paths []string
	for p, f := range l.index.fields {
		if !isModePath(p) {
			continue
		}
		lit, ok := f.Value.(*ast.BasicLit)
		if !ok || lit.Kind != token.INT || !decimalLooksOctal(lit.Value) {
			continue
		}
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		lit := l.index.fields[p].Value.(*ast.BasicLit)
		n, _ := strconv.ParseUint(lit.Value, 10, 32)
		l.ws.Warnings = append(l.ws.Warnings, Warning{Pos: l.c.pos(lit.Pos()), Msg: fmt.Sprintf(
			"%s: %s is decimal, which is mode 0o%o; write 0o%s for the mode it reads as", p, lit.Value, n, lit.Value)})
	}
}

// decimalLooksOctal reports whether a decimal literal of three or four
// digits uses only octal ones and is, as a number, beyond 0o777: 644 (0o1204)
// is a slip, 420 (0o644) someone who meant it. (0755 is not valid CUE.)
func decimalLooksOctal(s string) bool {
	if len(s) < 3 || len(s) > 4 || s[0] == '0' {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '7' {
			return false
		}
	}
	n, err := strconv.Atoi(s)
	return err == nil && n > 0o777
}

// NonHermeticMsg is the warning about the total images whose stages run in
// the host's /usr, given the first of them (images.NAME, sorted; four are
// enough): it is given once per workspace.
func NonHermeticMsg(images []string, total int) string {
	const show = 3
	list := images
	if total > show+1 {
		list = append(images[:show:show], fmt.Sprintf("%d more", total-show))
	}
	if len(list) == 1 {
		return fmt.Sprintf(`build root "host" is not hermetic: %s builds in the host's /usr, so its keys hold a host fingerprint`, list[0])
	}
	names := strings.Join(list[:len(list)-1], ", ") + " and " + list[len(list)-1]
	return fmt.Sprintf(`build root "host" is not hermetic: %s build in the host's /usr, so their keys hold a host fingerprint`, names)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Builtins returns a workspace holding only the built-in stage modules, for
// listing them outside any workspace.
func Builtins(ctx context.Context) (*Workspace, error) {
	l := &loader{ctx: cuecontext.New(), index: newPosIndex()}
	l.c = &collector{index: l.index}
	l.ws = &Workspace{StageModules: map[string]*StageModule{}}
	l.schema = l.ctx.CompileBytes(schema.Schema, cue.Filename(schemaFilename))
	if err := l.schema.Err(); err != nil {
		return nil, fmt.Errorf("embedded schema: %w", err)
	}
	l.value = l.ctx.CompileString("{}")
	l.decodeModules()
	return l.ws, nil
}

// OutputTypes returns the output formats the embedded schema's #OutputType
// allows, sorted.
func OutputTypes() ([]string, error) {
	v := cuecontext.New().CompileBytes(schema.Schema, cue.Filename(schemaFilename))
	if err := v.Err(); err != nil {
		return nil, fmt.Errorf("embedded schema: %w", err)
	}
	op, args := v.LookupPath(cue.ParsePath("#OutputType")).Expr()
	if op != cue.OrOp {
		return nil, fmt.Errorf("embedded schema: #OutputType is not a disjunction")
	}
	var out []string
	for _, a := range args {
		s, err := a.String()
		if err != nil {
			return nil, fmt.Errorf("embedded schema: #OutputType: %w", err)
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}
