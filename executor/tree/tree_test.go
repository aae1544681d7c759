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
		"fifo with numbers": {{Path: "x", Type: Fifo, Major: 1}},
		"file with numbers": {{Path: "x", Type: File, Digest: hello, Minor: 3}},
		"device with data":  {{Path: "x", Type: CharDev, Major: 1, Minor: 3, Digest: hello}},
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

// TestDevices checks that device nodes and fifos are entries, and that trees
// without them encode exactly as before (the new fields are omitted).
func TestDevices(t *testing.T) {
	tr := &Tree{Entries: []Entry{
		{Path: "dev", Type: Dir, Mode: 0o755},
		{Path: "dev/fifo", Type: Fifo, Mode: 0o600},
		{Path: "dev/null", Type: CharDev, Mode: 0o666, Major: 1, Minor: 3},
		{Path: "dev/sda", Type: BlockDev, Mode: 0o660, GID: 6, Major: 8},
	}}
	b, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"entries":[{"path":"dev","type":"dir","mode":493,"uid":0,"gid":0},` +
		`{"path":"dev/fifo","type":"fifo","mode":384,"uid":0,"gid":0},` +
		`{"path":"dev/null","type":"chardev","mode":438,"uid":0,"gid":0,"major":1,"minor":3},` +
		`{"path":"dev/sda","type":"blockdev","mode":432,"uid":0,"gid":6,"major":8}]}`
	if string(b) != want {
		t.Errorf("encoding\n got %s\nwant %s", b, want)
	}
	back, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := back.Lookup("dev/null"); !e.Type.IsDevice() || e.Major != 1 || e.Minor != 3 {
		t.Errorf("dev/null decoded as %+v", e)
	}
	if d, _ := sample().Digest(); d != digest.FromString(sampleEncoding) {
		t.Errorf("a tree without devices no longer encodes as before")
	}
}

const sampleEncoding = `{"entries":[{"path":"etc","type":"dir","mode":493,"uid":0,"gid":0},` +
	`{"path":"etc/hostname","type":"file","mode":420,"uid":0,"gid":0,"size":5,"digest":"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},` +
	`{"path":"sbin","type":"symlink","mode":511,"uid":0,"gid":0,"target":"bin"}]}`
