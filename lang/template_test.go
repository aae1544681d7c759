package lang_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/strata-build/strata/lang"
)

// TestReliabilityRow32TemplateRecordLacksField: a template record that lacks a
// field the template reads (in an instance's name or in one of its fields), or
// gives a struct where the name interpolates it, is an error at the template
// line naming the field and the record; no instance is silently dropped, and
// `strata expand` sees the record in error.
func TestReliabilityRow32TemplateRecordLacksField(t *testing.T) {
	ar := &archive{Files: []archiveFile{
		{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)},
		{Name: "main.cue", Data: []byte(`package bad

resources: devs: [
	{name: "a", rev: "1"},
	{rev: "2"},
	{name: "c"},
	{name: {x: 1}, rev: "4"},
]
templates: t: {
	resource: "devs"
	each: {
		d: _
		images: "img-\(d.name)": version: d.rev
	}
}
`)},
	}}
	dir, user, _ := extract(t, ar)
	ws, err := load(t, dir)
	if !errors.Is(err, lang.ErrInvalid) {
		t.Fatalf("want a workspace error, got %v", err)
	}
	checkErrors(t, err, user)
	want := []string{
		`main.cue:13:11: templates.t.each.images: the record has no field "name", which the template reads here (in the instance for templates.t record 1 (resources.devs[1] at main.cue:5:2))`,
		`main.cue:13:11: templates.t.each.images: the template interpolates a struct of the record here; an interpolation takes a string, number or bool (in the instance for templates.t record 3 (resources.devs[3] at main.cue:7:2))`,
		`main.cue:13:28: images.img-c.version: the record has no field "rev", which the template reads here (in the instance for templates.t record 2 (resources.devs[2] at main.cue:6:2))`,
	}
	if d := cmp.Diff(want, strings.Split(err.Error(), "\n")); d != "" {
		t.Errorf("errors (-want +got):\n%s", d)
	}
	// What expand shows: the one good record's instance, and the others in error.
	tmpl := ws.Templates["t"]
	if tmpl == nil || len(tmpl.Records) != 4 {
		t.Fatalf("template t: %+v", tmpl)
	}
	for i, r := range tmpl.Records {
		if inError := len(r.Errors) > 0; inError != (i > 0) {
			t.Errorf("record %d: errors %q", i, r.Errors)
		}
	}
	if img := ws.Images["img-a"]; img == nil || img.Version != "1" {
		t.Errorf("record 0's instance img-a: %+v", img)
	}
}
