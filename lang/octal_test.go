package lang

import "testing"

// TestOctalNumbers: numbers in a message about a mode read in octal, but the
// user's own quoted text is left as written: mode: "0644" was reported as
// "0o1204" is not allowed here.
func TestOctalNumbers(t *testing.T) {
	for msg, want := range map[string]string{
		`conflicting values 420 and 493`:           `conflicting values 0o644 and 0o755`,
		`"0644" is not allowed here (want int)`:    `"0644" is not allowed here (want int)`,
		`"rw-r--r-- 644" and 420`:                  `"rw-r--r-- 644" and 0o644`,
		`"a \"quoted 644\" b" 420 "x`:              `"a \"quoted 644\" b" 0o644 "x`,
		`invalid value 4096 (out of bound <=4095)`: `invalid value 0o10000 (out of bound <=0o7777)`,
		`0 stays 0`: `0 stays 0`,
	} {
		if got := octalNumbers(msg); got != want {
			t.Errorf("octalNumbers(%q) = %q, want %q", msg, got, want)
		}
	}
}
