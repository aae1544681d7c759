package plan

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// NamePattern is the one rule for the name of an image, job, hook, source,
// resource or template (unanchored): segments of letters, digits, '.', '_' and
// '-', each starting with a letter or digit, joined by '/' as a namespace
// separator (Checkbox names jobs optical/read_sr0; OCI repositories nest the same
// way). So no name is empty, starts or ends with '/', or holds an empty, "." or
// ".." segment, and a name used as a path stays where it is put. The schema's
// #NamePattern (cue/schema.cue) is the same string; a lang test checks.
const NamePattern = `[a-zA-Z0-9][a-zA-Z0-9._-]*(/[a-zA-Z0-9][a-zA-Z0-9._-]*)*`

var nameRE = regexp.MustCompile(`^(?:` + NamePattern + `)$`)

// ErrInvalidName is wrapped by every error CheckName returns.
var ErrInvalidName = errors.New("invalid name")

// CheckName returns nil if name follows NamePattern, else an error wrapping
// ErrInvalidName that says what is wrong with it.
func CheckName(name string) error {
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w %q: longer than %d bytes", ErrInvalidName, clip(name), MaxNameLength)
	}
	if nameRE.MatchString(name) {
		return nil
	}
	return fmt.Errorf("%w %q: %s", ErrInvalidName, clip(name), nameProblem(name))
}

// nameProblem says why a name the pattern refused is wrong, in the order a user
// would fix it.
func nameProblem(name string) string {
	switch {
	case name == "":
		return "a name must not be empty"
	case strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/"):
		return "a name must not start or end with '/'"
	}
	for _, seg := range strings.Split(name, "/") {
		switch {
		case seg == "":
			return "a name must not hold an empty segment ('//')"
		case seg == "." || seg == "..":
			return fmt.Sprintf("a name must not hold a %q segment", seg)
		case !isAlnum(seg[0]):
			return fmt.Sprintf("segment %q must start with a letter or digit", seg)
		}
		for _, r := range seg {
			if r >= 0x80 || !isAlnum(byte(r)) && r != '.' && r != '_' && r != '-' {
				return fmt.Sprintf("%q is not allowed: a name holds letters, digits, '.', '_', '-' and '/' between segments", r)
			}
		}
	}
	return "a name is segments of letters, digits, '.', '_' and '-' separated by '/'"
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// SegmentPattern is one segment of a name: an output's file name, an input's
// mount name.
const SegmentPattern = `^[a-zA-Z0-9][a-zA-Z0-9._-]*$`

// MaxNameLength bounds a name or segment read from a plan, so that every path
// made from one stays well within PATH_MAX.
const MaxNameLength = 255

var segmentRE = regexp.MustCompile(SegmentPattern)

// CheckSegment reports whether s is a single name segment (SegmentPattern).
func CheckSegment(s string) error {
	if len(s) > MaxNameLength {
		return fmt.Errorf("%q is %d bytes, over the %d a name may have", clip(s), len(s), MaxNameLength)
	}
	if !segmentRE.MatchString(s) {
		return fmt.Errorf("%q is not a plain name: letters, digits, '.', '_' and '-', starting with a letter or digit", clip(s))
	}
	return nil
}

// clip shortens hostile names before they go into a message.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
