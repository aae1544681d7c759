package plan

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestCanonicalKeyDoc: the direct writer of key documents gives the bytes of
// json.Marshal + jcs.Transform, or declines; a key must never change with it.
func TestCanonicalKeyDoc(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"", "a", "images.base", "/bin/sh", "-c", "x\"y", `back\slash`, "tab\there", "nl\n", "\x00\x01\x1f\x7f",
		"<>&", "\u2028\u2029", "é", "日本", "\U0001F600", "\b\f\r", "a b", "ü/ö"}
	str := func() string {
		s := ""
		for range r.IntN(3) + 1 {
			s += pieces[r.IntN(len(pieces))]
		}
		if r.IntN(500) == 0 {
			s += "\xff\xfe" // not UTF-8: the writer declines
		}
		return s
	}
	strs := func() []string {
		var out []string
		for range r.IntN(4) {
			out = append(out, str())
		}
		return out
	}
	smap := func() map[string]string {
		if r.IntN(3) == 0 {
			return nil
		}
		m := map[string]string{}
		for range r.IntN(5) {
			m[str()] = str()
		}
		return m
	}
	options := []string{"", "{}", "null", `{"b":1,"a":[1.5,2e10,-0,"x"],"c":{"z":true,"y":null}}`, `{"files":{"/etc/x":{"content":"a\u2028\n"}}}`, `{"n":1E400}`, `{bad`, `{"é":1,"e":2,"\ud83d\ude00":3,"\uffff":4}`}
	declined := 0
	for i := range 5000 {
		d := keyDoc{
			KeyVersion: r.IntN(3), Kind: str(), Type: str(), ModuleDigest: str(),
			Command: strs(), Network: r.IntN(2) == 0, Env: smap(), Artifact: str(), OnFailure: str(),
			Inputs: KeyInputRefs{Tree: str(), BuildRoot: str(), Mounts: smap(), After: strs()},
		}
		if o := options[r.IntN(len(options))]; o != "" {
			d.Options = json.RawMessage(o)
		}
		if r.IntN(2) == 0 {
			d.Platform = &Platform{OS: str(), Arch: str()}
		}
		if r.IntN(2) == 0 {
			d.Host = &Host{OS: str(), OSVersion: str(), Arch: str(), StrataVersion: str()}
		}
		if r.IntN(2) == 0 {
			d.Source = &Source{URL: str(), SHA256: str(), Path: str(), Digest: str(), Git: str(), Commit: str()}
		}
		want, werr := marshalKeyDoc(&d)
		got, ok := appendKeyDoc(nil, &d)
		if !ok {
			declined++
			continue
		}
		if werr != nil {
			t.Fatalf("doc %d: the writer accepted what the general path refuses (%v): %s", i, werr, got)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("doc %d:\n got %s\nwant %s", i, got, want)
		}
	}
	// Edges a reviewer found: jcs's nesting limit counts the whole document;
	// jcs writes numbers as doubles; empty containers; odd option values.
	var edges []keyDoc
	for _, n := range []int{9998, 9999, 10000} {
		edges = append(edges, keyDoc{Kind: "k", Type: "t", Options: json.RawMessage(strings.Repeat("[", n) + strings.Repeat("]", n))})
	}
	for _, v := range []int{1 << 53, 1<<53 + 1, 1 << 62} {
		edges = append(edges, keyDoc{KeyVersion: v, Kind: "k", Type: "t"})
	}
	for _, o := range []string{"null", " {} ", "\t[1,2]\n", `"x"`, `{"a":"\u003c\/"}`, "1.0", "-0", "[1e400]"} {
		edges = append(edges, keyDoc{Kind: "k", Type: "t", Options: json.RawMessage(o)})
	}
	edges = append(edges, keyDoc{Source: &Source{}, Host: &Host{}, Platform: &Platform{}, Env: map[string]string{}, Command: []string{},
		Inputs: KeyInputRefs{Mounts: map[string]string{}, After: []string{}}})
	for i := range edges {
		want, werr := marshalKeyDoc(&edges[i])
		got, ok := appendKeyDoc(nil, &edges[i])
		if ok && (werr != nil || !bytes.Equal(got, want)) {
			t.Errorf("edge %d: writer %.80s, general path %.80s (%v)", i, got, want, werr)
		}
	}
	if declined > 4000 {
		t.Errorf("the writer declined %d of 5000 documents: the test checks too little", declined)
	}
}
