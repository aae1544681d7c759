package compilecache

import (
	"bytes"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// A CUE file with the @extern(embed) attribute may read any file of its
// module into a value (@embed(file=...) or @embed(glob=...), relative to the
// file's directory). Those files are compile inputs like the spec's own, so
// the key covers them: found by reading the attributes out of the keyed .cue
// files, without CUE. The scan is textual, so an attribute inside a comment
// or a string only adds a file to the key; it never leaves one out.

var embedAttr = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`@embed\(([^)]*)\)`) })

var externEmbed = []byte("@extern(embed)")

// externScan passes what is written through it on to w, and notes whether
// it held @extern(embed), across the boundaries of the writes.
type externScan struct {
	w     io.Writer
	tail  []byte // the last len(externEmbed)-1 bytes written
	found bool
}

func (s *externScan) Write(p []byte) (int, error) {
	if !s.found {
		k := len(externEmbed) - 1
		edge := append(s.tail, p[:min(len(p), k)]...)
		s.found = bytes.Contains(edge, externEmbed) || bytes.Contains(p, externEmbed)
		if len(p) >= k {
			s.tail = append(s.tail[:0], p[len(p)-k:]...)
		} else {
			s.tail = append(s.tail[:0], edge[max(0, len(edge)-k):]...)
		}
	}
	return s.w.Write(p)
}

// embeds returns the files the .cue file rel (its bytes src) may embed,
// workspace-relative and slash-separated, with each glob pattern it uses as
// "glob:PATTERN" beside the files that match it now.
func embeds(dir, rel string, src []byte) (files []string) {
	base := path.Dir(rel)
	for _, m := range embedAttr().FindAllSubmatch(src, -1) {
		for _, arg := range splitArgs(string(m[1])) {
			k, v, ok := strings.Cut(arg, "=")
			if !ok {
				continue
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			switch k {
			case "file":
				files = append(files, path.Join(base, v))
			case "glob":
				matches, _ := filepath.Glob(filepath.Join(dir, filepath.FromSlash(path.Join(base, v))))
				for _, p := range matches {
					if info, err := os.Stat(p); err == nil && info.IsDir() {
						continue // a glob embeds files only
					}
					if r, err := filepath.Rel(dir, p); err == nil {
						files = append(files, filepath.ToSlash(r))
					}
				}
				// The pattern itself is keyed too (see Key): a file added
				// that it matches changes the list.
				files = append(files, "glob:"+path.Join(base, v))
			}
		}
	}
	slices.Sort(files)
	return slices.Compact(files)
}

// splitArgs splits an attribute's arguments at the commas outside quotes.
func splitArgs(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}
