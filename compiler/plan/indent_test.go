package plan

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzIndent: indent writes what json.Indent writes for any JSON as
// encoding/json encodes it (compact, then a newline).
func FuzzIndent(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `{"a":{},"b":[],"c":[{}],"d":[[]]}`, `"x"`, `1`, `null`,
		`{"s":"a\"b\\c\u00e9<>&\n","k":"{[,:]}"}`,
		`{"nodes":[{"id":"1","deps":[],"options":{"x":[1,{"y":"z"}],"e":{}}}],"images":{}}`,
		`[1,2,[3,[4,[]]],{"a":{"b":{"c":[]}}}]`, `"\\"`, `{"a\\":"\\\""}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) {
			return
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, in); err != nil {
			return
		}
		compact.WriteByte('\n')
		var want bytes.Buffer
		if err := json.Indent(&want, compact.Bytes(), "", "  "); err != nil {
			t.Fatal(err)
		}
		if got := indent(nil, compact.Bytes()); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("indent(%q):\n%s\njson.Indent:\n%s", compact.Bytes(), got, want.Bytes())
		}
	})
}
