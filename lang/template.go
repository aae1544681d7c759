package lang

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/format"
)

// expandTemplates instantiates every template once per record of its resource:
// each is unified with the record bound to its parameter, records whose if is
// false are skipped, and the images and jobs an instance defines are merged into
// the workspace. No code runs: the filter is a CUE expression.
func (l *loader) expandTemplates() {
	imageDef := l.schema.LookupPath(cue.ParsePath("#Image"))
	jobDef := l.schema.LookupPath(cue.ParsePath("#Job"))
	for _, f := range fields(l.lookup("templates")) {
		path := "templates." + f.name
		t := &Template{Name: f.name, Pos: l.index.at(path, Pos{File: "."}), Records: []TemplateRecord{}}
		t.Resource, _ = f.v.LookupPath(cue.ParsePath("resource")).String()
		l.ws.Templates[f.name] = t
		res, ok := l.ws.Resources[t.Resource]
		if !ok {
			l.c.add(l.index.at(path+".resource", t.Pos), path+".resource", "resource %q is not defined (resources: %s)", t.Resource, strings.Join(sortedKeys(l.ws.Resources), ", "))
			continue
		}
		t.Job = res.Job
		each := f.v.LookupPath(cue.ParsePath("each"))
		var params []string
		for _, ef := range fields(each) {
			switch ef.name {
			case "if", "images", "jobs":
			default:
				params = append(params, ef.name)
			}
		}
		if len(params) != 1 {
			l.c.add(l.index.at(path+".each", t.Pos), path+".each", "each must hold exactly one parameter field besides if, images and jobs (found %d: %s)", len(params), strings.Join(params, ", "))
			continue
		}
		t.Param = params[0]
		var filter ast.Expr
		if fd, ok := l.index.fields[path+".each.if"]; ok {
			filter = fd.Value
			if b, err := format.Node(fd.Value); err == nil {
				t.Filter = string(b)
			}
		}
		if res.Pending {
			// Its instances exist once the job ran (WithJobRecords).
			t.Pending = true
			continue
		}
		records, recordErrs := l.resourceRecords(res)
		// A filter problem is one error, whichever records meet it.
		var filterMsgs []string
		filterRecs := map[string][]int{}
		for i, rec := range records {
			recPath := l.recordDesc(f.name, t.Resource, i)
			tr := TemplateRecord{Index: i, Record: json.RawMessage(res.Records[i])}
			if len(recordErrs[i]) > 0 {
				// Reported once, at the record's line.
				tr.Errors = recordErrs[i]
				t.Records = append(t.Records, tr)
				continue
			}
			nerr := len(l.c.errs)
			inst := each.FillPath(cue.MakePath(cue.Str(t.Param)), rec)
			if ifv := inst.LookupPath(cue.ParsePath("if")); ifv.Exists() {
				pass, err := ifv.Bool()
				if err != nil {
					msg := filterErrMsg(err)
					if filterRecs[msg] == nil {
						filterMsgs = append(filterMsgs, msg)
					}
					filterRecs[msg] = append(filterRecs[msg], i)
					if field, ok := strings.CutPrefix(msg, "undefined field: "); ok {
						tr.Errors = []string{fmt.Sprintf("the record has no field %q, which the filter reads", field)}
					} else {
						tr.Errors = []string{"filter must evaluate to true or false: " + msg}
					}
					t.Records = append(t.Records, tr)
					continue
				}
				if !pass {
					tr.Reason = fmt.Sprintf("if %s is false%s", t.Filter, l.explainFilter(filter, t.Param, inst))
					t.Records = append(t.Records, tr)
					continue
				}
			}
			tr.Passed = true
			l.recordKeys = jsonKeys(res.Records[i])
			l.checkInstance(inst, path, t.Param, recPath)
			origin := &Instance{Template: f.name, Resource: t.Resource, Record: i, RecordPos: l.recordPos(t.Resource, i)}
			for _, img := range fields(inst.LookupPath(cue.ParsePath("images"))) {
				full := "images." + img.name
				posPath := l.instancePosPath(path+".each.images", img.name)
				origin.Pos = l.index.at(posPath, t.Pos)
				if !l.validName(img.name) {
					l.c.add(origin.Pos, cuePathString([]string{"images", strconv.Quote(img.name)}), "%s (in the instance for %s)", invalidNameMsg("image", img.name), recPath)
					continue
				}
				v := img.v.Unify(imageDef)
				if err := v.Validate(cue.Concrete(true)); err != nil {
					// Reported here; decodeImage still checks its stages and
					// references.
					l.c.suffix = " (in the instance for " + recPath + ")"
					l.addInstanceErr(err, img.v, v, "images", img.name, full, posPath)
				} else if !l.claim(full, recPath, origin.Pos) {
					continue
				}
				l.c.suffix = " (in the instance for " + recPath + ")"
				m := l.decodeImage(img.name, v, full, posPath)
				l.c.suffix = ""
				if m == nil {
					l.failed[full] = true
					if p := l.partial.Images[img.name]; p != nil {
						o := *origin
						p.Instance = &o
					}
					continue
				}
				o := *origin
				m.Instance = &o
				l.ws.Images[img.name] = m
				tr.Defines = append(tr.Defines, full)
			}
			for _, job := range fields(inst.LookupPath(cue.ParsePath("jobs"))) {
				full := "jobs." + job.name
				posPath := l.instancePosPath(path+".each.jobs", job.name)
				origin.Pos = l.index.at(posPath, t.Pos)
				if !l.validName(job.name) {
					l.c.add(origin.Pos, cuePathString([]string{"jobs", strconv.Quote(job.name)}), "%s (in the instance for %s)", invalidNameMsg("job", job.name), recPath)
					continue
				}
				v := job.v.Unify(jobDef)
				if err := v.Validate(cue.Concrete(true)); err != nil {
					l.c.suffix = " (in the instance for " + recPath + ")"
					l.addInstanceErr(err, job.v, v, "jobs", job.name, full, posPath)
				} else if !l.claim(full, recPath, origin.Pos) {
					continue
				}
				l.c.suffix = " (in the instance for " + recPath + ")"
				j := l.decodeJob(job.name, v, full, posPath)
				l.c.suffix = ""
				if j == nil {
					l.failed[full] = true
					if p := l.partial.Jobs[job.name]; p != nil {
						o := *origin
						p.Instance = &o
					}
					continue
				}
				o := *origin
				j.Instance = &o
				l.ws.Jobs[job.name] = j
				tr.Defines = append(tr.Defines, full)
			}
			l.recordKeys = nil
			for _, e := range l.c.errs[nerr:] {
				tr.Errors = append(tr.Errors, e.Error())
			}
			t.Records = append(t.Records, tr)
		}
		ifPos := l.index.at(path+".each.if", t.Pos)
		for _, msg := range filterMsgs {
			recs := recordList(t.Resource, filterRecs[msg])
			if field, ok := strings.CutPrefix(msg, "undefined field: "); ok {
				verb := "has"
				if len(filterRecs[msg]) > 1 {
					verb = "have"
				}
				l.c.add(ifPos, path+".each.if", "%s %s no field %q, which the filter reads", recs, verb, field)
				continue
			}
			l.c.add(ifPos, path+".each.if", "filter must evaluate to true or false for %s: %s", recs, msg)
		}
	}
}

// resourceRecords returns the records of a resource that is not pending, each
// with the errors it was reported with (a job's record its schema refused).
func (l *loader) resourceRecords(res *Resource) ([]cue.Value, [][]string) {
	if jr := l.jobRecords[res.Name]; jr != nil {
		return jr.values, jr.errs
	}
	var out []cue.Value
	it, _ := l.lookup("resources." + cue.MakePath(cue.Str(res.Name)).String()).List()
	for it.Next() {
		out = append(out, it.Value())
	}
	// A record that did not give JSON was reported and has no entry in
	// res.Records: instantiate only what lines up.
	out = out[:min(len(out), len(res.Records))]
	return out, make([][]string, len(out))
}

// recordPos is where record i of a resource is: its line in the workspace's
// files (the resource's when the record was computed), or in what the
// resource's job wrote.
func (l *loader) recordPos(resource string, i int) Pos {
	if jr := l.jobRecords[resource]; jr != nil && i < len(jr.pos) {
		return jr.pos[i]
	}
	pos := l.index.at(fmt.Sprintf("resources.%s[%d]", resource, i), Pos{File: "."})
	if r := l.ws.Resources[resource]; r != nil && pos.File == "." {
		pos = r.Pos
	}
	return pos
}

// recordDesc names a template's record with its position:
// "templates.t record 1 (resources.devs[1] at main.cue:3:40)", or for a job's
// record "(resources.devs[1] at jobs.probe/records.jsonl:2:1)".
func (l *loader) recordDesc(template, resource string, i int) string {
	return fmt.Sprintf("templates.%s record %d (resources.%s[%d] at %s)", template, i, resource, i, l.recordPos(resource, i))
}

// instanceNote is what errors about an instance's image or job end with.
func (l *loader) instanceNote(in *Instance) string {
	return " (in the instance for " + l.recordDesc(in.Template, in.Resource, in.Record) + ")"
}

// recordList names some records of a resource: "record 1 of resources.devs",
// "records 0, 1 and 4 of resources.devs".
func recordList(resource string, idx []int) string {
	nums := make([]string, len(idx))
	for i, n := range idx {
		nums[i] = strconv.Itoa(n)
	}
	if len(nums) == 1 {
		return fmt.Sprintf("record %s of resources.%s", nums[0], resource)
	}
	return fmt.Sprintf("records %s and %s of resources.%s", strings.Join(nums[:len(nums)-1], ", "), nums[len(nums)-1], resource)
}

// checkInstance reports what would make one record's instance lose an image or
// job without a word: a name (or a comprehension deciding which names exist)
// that reads a field the record lacks, or interpolates a struct. CUE leaves such
// a field out of the struct's fields instead of failing; only a concrete
// validation finds it. Errors inside an image or job are reported where that
// image or job is checked.
func (l *loader) checkInstance(inst cue.Value, path, param, recPath string) {
	err := inst.Validate(cue.Concrete(true))
	if err == nil {
		return
	}
	var items []*item
	for _, e := range cueErrors(err) {
		elems := e.Path()
		i := indexOf(elems, "each")
		if i < 0 {
			continue
		}
		rel := elems[i+1:]
		if len(rel) > 1 && rel[0] != param || len(rel) == 1 && rel[0] != "images" && rel[0] != "jobs" && rel[0] != param {
			continue
		}
		it := &item{e: e, path: cuePathString(elems), pos: l.c.userPos(e, path+".each")}
		if field, ok := missingField(e); ok && l.recordLacks(field) {
			it.msg = fmt.Sprintf("the record has no field %q, which the template reads here", field)
		} else if strings.Contains(fmt.Sprint(e), "invalid interpolation") && strings.Contains(fmt.Sprint(e), "(type struct)") {
			it.msg = "the template interpolates a struct of the record here; an interpolation takes a string, number or bool"
		}
		items = append(items, it)
	}
	l.c.suffix = " (in the instance for " + recPath + ")"
	l.c.addItems(items)
	l.c.suffix = ""
}

// recordLacks reports whether a template record is being instantiated and has no
// key named field at any depth: then an undefined field is the record's lack,
// not a slip in the template.
func (l *loader) recordLacks(field string) bool {
	return l.recordKeys != nil && !l.recordKeys[field]
}

// jsonKeys collects the object keys of a JSON document at every depth.
func jsonKeys(b []byte) map[string]bool {
	keys := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				keys[k] = true
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var v any
	if json.Unmarshal(b, &v) == nil {
		walk(v)
	}
	return keys
}

// missingField reports whether a CUE error is a reference to a field that does
// not exist, anywhere in its message (CUE wraps it in the reason a dynamic
// field's name is not concrete), and which field.
func missingField(e cueerrors.Error) (string, bool) {
	const marker = "undefined field: "
	msg := e.Error()
	i := strings.Index(msg, marker)
	if i < 0 {
		return "", false
	}
	field := msg[i+len(marker):]
	if j := strings.IndexAny(field, ") \n"); j >= 0 {
		field = field[:j]
	}
	return field, field != ""
}

// claim records that origin defines name, or reports the collision naming both.
func (l *loader) claim(name, origin string, pos Pos) bool {
	if prev, dup := l.defined[name]; dup {
		l.c.add(pos, name, "defined twice: by %s and by %s", prev, origin)
		return false
	}
	l.defined[name] = origin
	return true
}

func (l *loader) instancePosPath(prefix, name string) string {
	literal := prefix + "." + name
	if _, ok := l.index.lookup(literal); ok {
		return literal
	}
	return prefix + ".*"
}

// explainFilter lists the values of the record fields a filter refers to, so that
// `strata expand` can say why a record was skipped.
func (l *loader) explainFilter(filter ast.Expr, param string, inst cue.Value) string {
	if filter == nil {
		return ""
	}
	var parts []string
	seen := map[string]bool{}
	ast.Walk(filter, func(n ast.Node) bool {
		se, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		p := selectorPath(se)
		if p == "" || !strings.HasPrefix(p, param+".") || seen[p] {
			return false
		}
		seen[p] = true
		v := inst.LookupPath(cue.ParsePath(p))
		b, err := v.MarshalJSON()
		if err != nil {
			b = []byte("(none)")
		}
		parts = append(parts, p+" = "+string(b))
		return false
	}, nil)
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func selectorPath(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		base := selectorPath(e.X)
		name, _, err := ast.LabelName(e.Sel)
		if base == "" || err != nil {
			return ""
		}
		return base + "." + name
	}
	return ""
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// filterErrMsg is CUE's reason a filter is not a bool, without CUE's path (the
// error already names templates.T.each.if).
func filterErrMsg(err error) string {
	if es := cueErrors(err); len(es) > 0 {
		return cleanMsg(es[0])
	}
	return strings.TrimSpace(firstLine(err))
}

// validName reports whether s is a #Name. Names a template computes are checked
// here: the schema's [#Name] pattern only sees the template's own fields.
func (l *loader) validName(s string) bool { return l.nameRE.MatchString(s) }

func invalidNameMsg(kind, name string) string {
	return fmt.Sprintf("invalid %s name %q: a name is letters, digits, '.', '_' and '-', starting with a letter or digit, in segments joined by '/' (no empty, '.' or '..' segment)", kind, name)
}
