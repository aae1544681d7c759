package lang

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"
	cuejson "cuelang.org/go/encoding/json"
)

// RecordsFile is the file a resource job writes its records to, one JSON object
// per line, in the directory it gives back (/run/strata/out).
const RecordsFile = "records.jsonl"

// MaxRecordsSize bounds what Load reads of a resource job's records: 64 MiB.
const MaxRecordsSize = 64 << 20

// maxRecordLineErrors bounds the errors reported for lines that are not JSON:
// a job that writes something else entirely gets a few, not one per line.
const maxRecordLineErrors = 5

// Option configures Load.
type Option func(*options)

type options struct {
	records map[string][]byte
}

// WithJobRecords gives Load what resource jobs wrote: for a job name (as under
// jobs:, without "jobs."), the content of its records.jsonl. Templates over a
// resource whose job is given are instantiated over those records exactly as
// over records written down; by default, and for a job not given, they are
// pending (Template.Pending) and define nothing.
func WithJobRecords(records map[string][]byte) Option {
	return func(o *options) { o.records = records }
}

// RecordsOrigin is how positions name the records job wrote:
// "jobs.NAME/records.jsonl".
func RecordsOrigin(job string) string { return "jobs." + job + "/" + RecordsFile }

// jobRecords are the records a resource's job wrote, one entry per record (each
// non-blank line).
type jobRecords struct {
	// values are the records unified with the resource's schema; the zero
	// Value for a record in error.
	values []cue.Value
	pos    []Pos
	// errs are the errors of each record, as printed.
	errs [][]string
}

// parseJobRecords reads what a resource's job wrote: one JSON object per line,
// each unified with the resource's schema (its defaults apply) and then
// concrete. A line that is not a JSON object, or a record the schema refuses,
// is an error at the record's line and field. When some line is not JSON no
// record is used: the numbering of the rest would be a guess.
func (l *loader) parseJobRecords(r *Resource, schema cue.Value, data []byte) *jobRecords {
	file := RecordsOrigin(r.Job)
	path := "resources." + r.Name
	jr := &jobRecords{}
	if len(data) > MaxRecordsSize {
		l.c.add(r.Pos, path, "jobs.%s wrote %d bytes to %s; records are read up to %d MiB", r.Job, len(data), RecordsFile, MaxRecordsSize>>20)
		return jr
	}
	var lines []int
	bad := 0
	for i, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		n := len(lines)
		lines = append(lines, i+1)
		var v any
		err := stdjson.Unmarshal(line, &v)
		if _, obj := v.(map[string]any); err == nil && obj {
			continue
		}
		if bad++; bad > maxRecordLineErrors {
			continue
		}
		pos := Pos{File: file, Line: i + 1, Col: 1}
		if err != nil {
			l.c.add(pos, fmt.Sprintf("%s[%d]", path, n), "a record is one JSON object on one line: %v", err)
		} else {
			l.c.add(pos, fmt.Sprintf("%s[%d]", path, n), "a record is one JSON object on one line, not %s", jsonKind(v))
		}
	}
	if bad > maxRecordLineErrors {
		l.c.add(Pos{File: file, Line: lines[len(lines)-1], Col: 1}, path, "%d more lines of %s are not JSON objects", bad-maxRecordLineErrors, file)
	}
	if bad > 0 {
		return jr
	}
	dec := cuejson.NewDecoder(nil, file, bytes.NewReader(data))
	for i := range lines {
		expr, err := dec.Extract()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			// Every line was checked above: this is CUE disagreeing with Go's
			// JSON reader.
			l.c.add(Pos{File: file, Line: lines[i], Col: 1}, fmt.Sprintf("%s[%d]", path, i), "reading the record: %v", err)
			return &jobRecords{}
		}
		raw := l.ctx.BuildExpr(expr)
		v := raw
		if schema.Exists() {
			v = schema.Unify(raw)
		}
		pos := Pos{File: file, Line: lines[i], Col: 1}
		jr.pos = append(jr.pos, pos)
		nerr := len(l.c.errs)
		if err := v.Validate(cue.Concrete(true)); err != nil {
			l.addRecordErr(err, raw, v, schema, fmt.Sprintf("%s[%d]", path, i), file, pos)
		} else if b, err := v.MarshalJSON(); err != nil {
			l.c.add(pos, fmt.Sprintf("%s[%d]", path, i), "%v", err)
		} else {
			r.Records = append(r.Records, b)
			jr.values = append(jr.values, v)
			jr.errs = append(jr.errs, nil)
			continue
		}
		var msgs []string
		for _, e := range l.c.errs[nerr:] {
			msgs = append(msgs, e.Error())
		}
		if len(msgs) == 0 {
			// The collector keeps one copy of an error; this record's is the same.
			msgs = []string{"the record does not match the resource's schema"}
		}
		b, _ := raw.MarshalJSON()
		r.Records = append(r.Records, b)
		jr.values = append(jr.values, cue.Value{})
		jr.errs = append(jr.errs, msgs)
	}
	return jr
}

// addRecordErr reports why a record does not match its resource's schema: at
// the value in the job's records (the record's line when the error is a field
// the record lacks), with the record's path (resources.devs[2].category).
func (l *loader) addRecordErr(err error, raw, v, schema cue.Value, path, file string, at Pos) {
	errs := cueErrors(err)
	// The error that sums up a disjunction has no position; its alternatives'
	// have the value's.
	posOf := map[string]Pos{}
	for _, e := range errs {
		if k := strings.Join(e.Path(), "\x00"); posOf[k] == (Pos{}) || posOf[k] == at {
			posOf[k] = recordErrPos(e, file, at)
		}
	}
	var items []*item
	said := map[string]bool{}
	for _, e := range errs {
		key := strings.Join(e.Path(), "\x00")
		rel := e.Path()
		if len(rel) >= 3 && rel[0] == "resources" && rel[2] == "schema" {
			// The path is the schema's, where the record was unified.
			rel = rel[3:]
		}
		if said[key] {
			continue
		}
		if msg, ok := disjunctionMsg(e, schema, raw, rel); ok {
			// CUE's errors for a disjunction may list only some of its
			// alternatives; the schema lists them all.
			said[key] = true
			items = slices.DeleteFunc(items, func(it *item) bool { return strings.Join(it.e.Path(), "\x00") == key })
			l.c.add(posOf[key], path+"."+cuePathString(rel), "%s", msg)
			continue
		}
		pos := posOf[key]
		epath := path
		if sub := cuePathString(rel); sub != "" {
			epath += "." + sub
		}
		items = append(items, &item{e: e, path: epath, pos: pos, known: siblings(v, rel), have: func() (cue.Value, bool) {
			if len(rel) == 0 {
				return cue.Value{}, true
			}
			u := lookupElems(raw, rel)
			return u, u.Exists()
		}})
	}
	l.c.addItems(items)
}

// recordErrPos is the first of an error's positions in the job's records (the
// value in error), else the record's line.
func recordErrPos(e cueerrors.Error, file string, at Pos) Pos {
	for _, p := range append([]token.Pos{e.Position()}, e.InputPositions()...) {
		if p.IsValid() && p.Filename() == file {
			return Pos{File: file, Line: p.Line(), Col: p.Column()}
		}
	}
	return at
}

// disjunctionMsg says which values a record's field may take when it takes
// none of its schema's alternatives (all concrete), and what it holds.
func disjunctionMsg(e cueerrors.Error, schema, raw cue.Value, rel []string) (string, bool) {
	if !strings.Contains(e.Error(), "empty disjunction") || !schema.Exists() || len(rel) == 0 {
		return "", false
	}
	op, args := lookupElems(schema, rel).Expr()
	have, err := lookupElems(raw, rel).MarshalJSON()
	if op != cue.OrOp || err != nil {
		return "", false
	}
	var alts []string
	for _, a := range args {
		b, err := a.MarshalJSON()
		if err != nil {
			return "", false
		}
		alts = append(alts, string(b))
	}
	return fmt.Sprintf("%s is not allowed here (want one of: %s)", shortArg(string(have)), strings.Join(alts, ", ")), true
}

// jsonKind names the kind of a decoded JSON value for an error.
func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a value of another kind"
}
