package plan

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, name := range []string{"a", "base", "fleet-x86-nuc", "a.b", "a..b", "optical/read_sr0", "x/y/z", "0", "A_1"} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", name, err)
		}
	}
	for name, why := range map[string]string{
		"":          "empty",
		"/a":        "start or end with '/'",
		"a/":        "start or end with '/'",
		"a//b":      "empty segment",
		"a/../b":    `".." segment`,
		"..":        `".." segment`,
		"a/./b":     `"." segment`,
		"-a":        "must start with a letter or digit",
		"a/.hidden": "must start with a letter or digit",
		"a b":       "' ' is not allowed",
		"a:b":       "':' is not allowed",
		"é":         "must start with a letter or digit",
		"aé":        "'é' is not allowed",
		"a\nb":      `'\n' is not allowed`,
	} {
		err := CheckName(name)
		if err == nil {
			t.Errorf("CheckName(%q) = nil, want an error", name)
			continue
		}
		if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), why) {
			t.Errorf("CheckName(%q) = %v, want it to wrap ErrInvalidName and say %q", name, err, why)
		}
	}
}
