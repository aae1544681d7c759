package plan

import (
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// Every build recomputes the key of every node of its plan (Verify), a no-op
// build included, and json.Marshal followed by jcs.Transform (which parses the
// JSON again to canonicalise it) was most of that. appendKeyDoc writes the
// same RFC 8785 bytes directly: members in the order of their UTF-16 names,
// strings escaped as ECMAScript's JSON.stringify does. Only the options, which
// are the user's JSON, still go through jcs.Transform. TestCanonicalKeyDoc
// checks the two agree.

// appendKeyDoc appends d as RFC 8785 JSON to b. ok is false when d holds
// something only the general path handles exactly (a string that is not
// UTF-8, which json.Marshal would change; a map key beyond the Basic
// Multilingual Plane, whose UTF-16 order differs from its byte order; options
// that are not valid JSON, whose error the general path reports; a key version
// beyond what a double holds exactly).
func appendKeyDoc(b []byte, d *keyDoc) (out []byte, ok bool) {
	if d.KeyVersion > 1<<53 || d.KeyVersion < -(1<<53) {
		return b, false // jcs writes numbers as IEEE doubles
	}
	c := canon{b: b, ok: true}
	c.open()
	if d.Artifact != "" {
		c.str("artifact", d.Artifact)
	}
	if len(d.Command) > 0 {
		c.strList("command", d.Command)
	}
	if len(d.Env) > 0 {
		c.strMap("env", d.Env)
	}
	if h := d.Host; h != nil {
		c.name("host")
		c.open()
		c.str("arch", h.Arch)
		c.str("os", h.OS)
		c.str("os_version", h.OSVersion)
		c.str("strata_version", h.StrataVersion)
		c.close()
	}
	c.name("inputs")
	c.open()
	in := &d.Inputs
	if len(in.After) > 0 {
		c.strList("after", in.After)
	}
	if in.BuildRoot != "" {
		c.str("buildroot", in.BuildRoot)
	}
	if len(in.Mounts) > 0 {
		c.strMap("mounts", in.Mounts)
	}
	if in.Tree != "" {
		c.str("tree", in.Tree)
	}
	c.close()
	c.name("key_version")
	c.b = strconv.AppendInt(c.b, int64(d.KeyVersion), 10)
	c.str("kind", d.Kind)
	if d.ModuleDigest != "" {
		c.str("module_digest", d.ModuleDigest)
	}
	c.name("network")
	c.b = strconv.AppendBool(c.b, d.Network)
	if d.OnFailure != "" {
		c.str("on_failure", d.OnFailure)
	}
	if len(d.Options) > 0 {
		// Canonicalised one level down, as in the whole document, so that
		// jcs's nesting limit refuses what the general path refuses.
		wrapped := make([]byte, 0, len(d.Options)+6)
		wrapped = append(append(append(wrapped, `{"o":`...), d.Options...), '}')
		opts, err := jcs.Transform(wrapped)
		if err != nil {
			return b, false
		}
		c.name("options")
		c.b = append(c.b, opts[len(`{"o":`):len(opts)-1]...)
	}
	if p := d.Platform; p != nil {
		c.name("platform")
		c.open()
		c.str("arch", p.Arch)
		c.str("os", p.OS)
		c.close()
	}
	if s := d.Source; s != nil {
		c.name("source")
		c.open()
		for _, m := range [...]struct{ name, v string }{
			{"commit", s.Commit}, {"digest", s.Digest}, {"git", s.Git},
			{"path", s.Path}, {"sha256", s.SHA256}, {"url", s.URL},
		} {
			if m.v != "" {
				c.str(m.name, m.v)
			}
		}
		c.close()
	}
	c.str("type", d.Type)
	c.close()
	if !c.ok {
		return b, false
	}
	return c.b, true
}

// canon writes RFC 8785 JSON; first is set at the start of an object.
type canon struct {
	b     []byte
	first bool
	ok    bool
}

func (c *canon) open() {
	c.b = append(c.b, '{')
	c.first = true
}

func (c *canon) close() {
	c.b = append(c.b, '}')
	c.first = false
}

// name starts a member; names are the fixed ASCII names of keyDoc.
func (c *canon) name(n string) {
	if !c.first {
		c.b = append(c.b, ',')
	}
	c.first = false
	c.b = append(c.b, '"')
	c.b = append(c.b, n...)
	c.b = append(c.b, '"', ':')
}

func (c *canon) str(n, v string) {
	c.name(n)
	c.value(v)
}

func (c *canon) strList(n string, l []string) {
	c.name(n)
	c.b = append(c.b, '[')
	for i, s := range l {
		if i > 0 {
			c.b = append(c.b, ',')
		}
		c.value(s)
	}
	c.b = append(c.b, ']')
}

func (c *canon) strMap(n string, m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		for i := 0; i < len(k); i++ {
			if k[i] >= 0xf0 { // a 4-byte UTF-8 sequence: beyond the BMP
				c.ok = false
			}
		}
		keys = append(keys, k)
	}
	slices.Sort(keys) // byte order is UTF-16 order within the BMP
	c.name(n)
	c.b = append(c.b, '{')
	for i, k := range keys {
		if i > 0 {
			c.b = append(c.b, ',')
		}
		c.value(k)
		c.b = append(c.b, ':')
		c.value(m[k])
	}
	c.b = append(c.b, '}')
}

const hexDigits = "0123456789abcdef"

// value writes s as a JSON string the way RFC 8785 does: only the quote, the
// backslash and control characters are escaped.
func (c *canon) value(s string) {
	if !utf8.ValidString(s) {
		c.ok = false
		return
	}
	c.b = append(c.b, '"')
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch ch {
		case '"', '\\':
			c.b = append(c.b, '\\', ch)
		case '\b':
			c.b = append(c.b, '\\', 'b')
		case '\f':
			c.b = append(c.b, '\\', 'f')
		case '\n':
			c.b = append(c.b, '\\', 'n')
		case '\r':
			c.b = append(c.b, '\\', 'r')
		case '\t':
			c.b = append(c.b, '\\', 't')
		default:
			if ch < 0x20 {
				c.b = append(c.b, '\\', 'u', '0', '0', hexDigits[ch>>4], hexDigits[ch&0xf])
			} else {
				c.b = append(c.b, ch)
			}
		}
	}
	c.b = append(c.b, '"')
}
