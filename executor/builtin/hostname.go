package builtin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// hostnameOptions are the options of strata.hostname:
//
//	{"hostname": "name"}
//
// hostname is required: one or more dot-separated RFC 1123 labels (letters,
// digits, hyphens, 1-63 bytes each, no hyphen first or last), at most 64 bytes
// in all.
type hostnameOptions struct {
	Hostname string `json:"hostname"`
}

// defaultHosts is /etc/hosts when the tree has none, before the 127.0.1.1 line.
const defaultHosts = "127.0.0.1\tlocalhost\n" +
	"::1\tlocalhost ip6-localhost ip6-loopback\n" +
	"ff02::1\tip6-allnodes\n" +
	"ff02::2\tip6-allrouters\n"

func checkHostname(h string) error {
	if h == "" {
		return errors.New("hostname: must not be empty")
	}
	if len(h) > 64 {
		return fmt.Errorf("hostname: %q is longer than 64 bytes", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("hostname: %q has an empty or over-long label", h)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("hostname: %q has a label starting or ending with '-'", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("hostname: %q contains %q (allowed: letters, digits, '-', '.')", h, c)
			}
		}
	}
	return nil
}

func runHostname(ctx context.Context, options []byte, env Env) error {
	var o hostnameOptions
	if err := decode(options, &o); err != nil {
		return err
	}
	if err := checkHostname(o.Hostname); err != nil {
		return err
	}
	t, err := openTree(env)
	if err != nil {
		return fmt.Errorf("open tree: %w", err)
	}
	defer t.Close()
	if err := t.replaceFile("etc/hostname", []byte(o.Hostname+"\n"), 0o644, rootOwner, false); err != nil {
		return err
	}
	hosts, _, err := t.readFile("etc/hosts")
	if err != nil {
		return err
	}
	if hosts == nil {
		hosts = []byte(defaultHosts)
	}
	if err := t.replaceFile("etc/hosts", updateHosts(hosts, o.Hostname), 0o644, rootOwner, true); err != nil {
		return err
	}
	return ctx.Err()
}

// updateHosts replaces the first 127.0.1.1 line of hosts (dropping any
// others), or adds one after the last 127.0.0.1 line, or at the end. A
// dotted name also gets its first label as an alias, as Debian does.
func updateHosts(hosts []byte, name string) []byte {
	entry := "127.0.1.1\t" + name
	if short, _, ok := strings.Cut(name, "."); ok {
		entry += " " + short
	}
	lines := strings.Split(strings.TrimSuffix(string(hosts), "\n"), "\n")
	if len(hosts) == 0 {
		lines = nil
	}
	var out []string
	done := false
	lastLoopback := -1
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "127.0.1.1" {
			if !done {
				out = append(out, entry)
				done = true
			}
			continue
		}
		if len(f) > 0 && f[0] == "127.0.0.1" {
			lastLoopback = len(out)
		}
		out = append(out, l)
	}
	switch {
	case done:
	case lastLoopback >= 0:
		out = slices.Insert(out, lastLoopback+1, entry)
	default:
		out = append(out, entry)
	}
	var b bytes.Buffer
	for _, l := range out {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}
