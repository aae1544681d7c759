package tree

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

var hello = digest.FromString("hello")

func sample() *Tree {
	return &Tree{Entries: []Entry{
		{Path: "etc", Type: Dir, Mode: 0o755},
		{Path: "etc/hostname", Type: File, Mode: 0o644, Size: 5, Digest: hello},
		{Path: "sbin", Type: Symlink, Mode: 0o777, Target: "bin"},
	}}
}

func TestEncodeIsCanonicalAndRoundTrips(t *testing.T) {
	a := sample()
	shuffled := &Tree{Entries: []Entry{a.Entries[2], a.Entries[0], a.Entries[1]}}
	shuffled.Sort()
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, err := shuffled.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Fatalf("equal trees have different digests: %s vs %s", da, db)
	}
	b, _ := a.Encode()
	back, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := back.Digest(); d != da {
		t.Fatalf("decode(encode(t)) changed the digest")
	}
	if e, ok := back.Lookup("etc/hostname"); !ok || e.Digest != hello {
		t.Fatalf("lookup: %+v %v", e, ok)
	}
	if _, ok := back.Lookup("etc/missing"); ok {
		t.Fatal("lookup of a missing path succeeded")
	}
}

func TestValidateRejects(t *testing.T) {
	for name, entries := range map[string][]Entry{
		"absolute":          {{Path: "/etc", Type: Dir, Mode: 0o755}},
		"dotdot":            {{Path: "../etc", Type: Dir, Mode: 0o755}},
		"unclean":           {{Path: "etc//x", Type: Dir, Mode: 0o755}},
		"dot":               {{Path: ".", Type: Dir, Mode: 0o755}},
		"unsorted":          {{Path: "b", Type: Dir}, {Path: "a", Type: Dir}},
		"duplicate":         {{Path: "a", Type: Dir}, {Path: "a", Type: Dir}},
		"missing parent":    {{Path: "etc/x", Type: File, Digest: hello}},
		"parent not a dir":  {{Path: "etc", Type: File, Digest: hello}, {Path: "etc/x", Type: File, Digest: hello}},
		"file no digest":    {{Path: "x", Type: File}},
		"symlink no target": {{Path: "x", Type: Symlink}},
		"mode bits":         {{Path: "x", Type: Dir, Mode: 0o170000}},
		"unknown type":      {{Path: "x", Type: "device"}},
		"negative size":     {{Path: "x", Type: File, Digest: hello, Size: -1}},
	} {
		t.Run(name, func(t *testing.T) {
			tr := &Tree{Entries: entries}
			if err := tr.Validate(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
			if _, err := tr.Encode(); err == nil {
				t.Fatal("Encode accepted an invalid tree")
			}
		})
	}
}

func TestDecodeRejectsUnknownFields(t *testing.T) {
	if _, err := Decode([]byte(`{"entries":[],"extra":1}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Decode = %v, want ErrInvalid", err)
	}
}

func TestIsSHA256(t *testing.T) {
	good := digest.FromString("x")
	for d, want := range map[digest.Digest]bool{
		good: true,
		"sha256:" + digest.Digest(string(good)[7:70]):                false, // 63 digits
		digest.Digest(string(good) + "0"):                            false,
		digest.Digest("sha512:" + string(good)[7:]):                  false,
		digest.Digest("sha256:" + strings.ToUpper(string(good)[7:])): false,
		"sha256:" + digest.Digest(strings.Repeat("g", 64)):           false,
		"": false,
	} {
		if got := IsSHA256(d); got != want {
			t.Errorf("IsSHA256(%q) = %v, want %v", d, got, want)
		}
	}
}
