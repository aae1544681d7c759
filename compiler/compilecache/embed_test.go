package compilecache

import (
	"bytes"
	"strings"
	"testing"
)

// TestExternScanAcrossWrites: @extern(embed) is noticed wherever the writes
// that carry it are split, and not where it is absent.
func TestExternScanAcrossWrites(t *testing.T) {
	text := strings.Repeat("x", 100) + "@extern(embed)" + strings.Repeat("y", 100)
	{
		for _, step := range []int{1, 3, 13, len(text)} {
			var out bytes.Buffer
			s := &externScan{w: &out}
			for i := 0; i < len(text); i += step {
				s.Write([]byte(text[i:min(i+step, len(text))]))
			}
			if !s.found || out.String() != text {
				t.Fatalf("writes of %d bytes: found %t, passed on %d of %d bytes", step, s.found, out.Len(), len(text))
			}
		}
	}
	s := &externScan{w: &bytes.Buffer{}}
	s.Write([]byte("@extern(embe"))
	s.Write([]byte("x)"))
	if s.found {
		t.Fatal("found @extern(embed) where it is not")
	}
}
