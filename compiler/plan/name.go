package plan

import (
	"fmt"
	"regexp"
	"strings"
)

// NamePattern is the rule for the names of images, jobs, hooks, sources,
// resources and templates: segments of letters, digits, '.', '_' and '-' that
// start with a letter or digit, separated by '/' (a namespace separator, as in
// Checkbox's "optical/read_sr0" and nested OCI repositories). So "..", empty
// segments and a leading or trailing '/' are impossible. The CUE schema's #Name
// is the same pattern (a test checks).
const NamePattern = `^[a-zA-Z0-9][a-zA-Z0-9._-]*(/[a-zA-Z0-9][a-zA-Z0-9._-]*)*$`

// SegmentPattern is one segment of a name: an output's file name, an input's
// mount name.
const SegmentPattern = `^[a-zA-Z0-9][a-zA-Z0-9._-]*$`

// MaxNameLength bounds a name, so that every path made from one stays well
// within PATH_MAX.
const MaxNameLength = 255

var (
	nameRE    = regexp.MustCompile(NamePattern)
	segmentRE = regexp.MustCompile(SegmentPattern)
)

// CheckName reports whether name follows NamePattern.
func CheckName(name string) error {
	if len(name) > MaxNameLength || !nameRE.MatchString(name) {
		return fmt.Errorf("name %q: names are segments of letters, digits, '.', '_' and '-' separated by '/', each starting with a letter or digit", clip(name))
	}
	return nil
}

// CheckSegment reports whether s is a single name segment (SegmentPattern).
func CheckSegment(s string) error {
	if len(s) > MaxNameLength || !segmentRE.MatchString(s) {
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
