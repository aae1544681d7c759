package registry

import (
	"strings"
	"testing"
)

// TestTagOf: versions become tags by the distribution spec's grammar, '+'
// written as '_', at most 128 characters.
func TestTagOf(t *testing.T) {
	for version, want := range map[string]string{
		"1.2.3":                  "1.2.3",
		"1.0.0+build.7":          "1.0.0_build.7",
		"_x":                     "_x",
		strings.Repeat("a", 128): strings.Repeat("a", 128),
	} {
		if got, err := TagOf(version); err != nil || got != want {
			t.Errorf("TagOf(%q) = %q, %v; want %q", version, got, err, want)
		}
	}
	for _, version := range []string{"", ".1", "-1", "1/2", "1 2", "é", strings.Repeat("a", 129)} {
		if got, err := TagOf(version); err == nil {
			t.Errorf("TagOf(%q) = %q, want an error", version, got)
		}
	}
}
