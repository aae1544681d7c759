package lang

import "testing"

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"version", "version", 0},
		{"verison", "version", 1}, {"hostnme", "hostname", 1}, {"colour", "color", 1},
		{"kitten", "sitting", 3}, {"ab", "ba", 1}, {"ca", "abc", 3}, {"héllo", "hello", 1},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestNearest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cands []string
		want  string
	}{
		{"verison", []string{"version", "platform", "stages"}, "version"},
		{"strata.hostnme", []string{"strata.files", "strata.hostname"}, "strata.hostname"},
		{"format", []string{"name", "size", "type"}, "type"},
		{"format", []string{"name", "size"}, ""},
		{"xyz", []string{"version"}, ""},
		{"a", []string{"b"}, "b"},
		{"version", []string{"version"}, ""},
		{"Base", []string{"base", "bass"}, "base"},
	} {
		if got := nearest(tc.name, tc.cands); got != tc.want {
			t.Errorf("nearest(%q, %v) = %q, want %q", tc.name, tc.cands, got, tc.want)
		}
	}
}
