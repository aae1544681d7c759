package lang_test

import (
	"errors"
	"testing"

	"github.com/strata-build/strata/lang"
)

// Hostile or odd spec files (RELIABILITY row 21) end in one clear error, never an
// empty one.

func TestSecurityRow21FileNameCUECannotLoad(t *testing.T) {
	for name, quoted := range map[string]string{
		"a:1:1: fine.cue": `"a:1:1: fine.cue"`,
		`back\slash.cue`:  `"back\\slash.cue"`,
		"nl\nx.cue":       `"nl\nx.cue"`,
	} {
		ar := &archive{Files: []archiveFile{
			{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)},
			{Name: "main.cue", Data: []byte("package ok\n\nimages: a: version: \"1\"\n")},
			{Name: name, Data: []byte("package ok\n")},
		}}
		dir, _, _ := extract(t, ar)
		_, err := load(t, dir)
		var es lang.Errors
		if !errors.As(err, &es) || len(es) != 1 {
			t.Fatalf("%q: want one error, got %v", name, err)
		}
		want := ".: spec file " + quoted + ": CUE cannot load a file whose name holds ':', '\\' or control characters; rename it"
		if got := es[0].Error(); got != want {
			t.Errorf("%q:\n got: %s\nwant: %s", name, got, want)
		}
	}
}

func TestSecurityRow21InvalidUTF8(t *testing.T) {
	for name, tc := range map[string]struct{ file, data, want string }{
		"cue string":  {"main.cue", "package ok\n\nimages: a: version: \"1\xff\"\n", `main.cue:3:23: invalid UTF-8 (byte 0xff): spec files are UTF-8 text`},
		"cue comment": {"main.cue", "package ok\n\n// caf\xe9\nimages: a: version: \"1\"\n", `main.cue:3:7: invalid UTF-8 (byte 0xe9): spec files are UTF-8 text`},
		"json":        {"images.json", "{\"images\": {\"a\": {\"version\": \"\xc3\x28\"}}}", `images.json:1:31: invalid UTF-8 (byte 0xc3): spec files are UTF-8 text`},
	} {
		t.Run(name, func(t *testing.T) {
			ar := &archive{Files: []archiveFile{
				{Name: "cue.mod/module.cue", Data: []byte(moduleCUE)},
				{Name: tc.file, Data: []byte(tc.data)},
			}}
			dir, _, _ := extract(t, ar)
			_, err := load(t, dir)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v\nwant %s", err, tc.want)
			}
		})
	}
}
