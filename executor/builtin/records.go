package builtin

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/executor/tree"
)

// Record is what a built-in stage could not do in a rootless sandbox and
// recorded for the executor (see OwnerXattrEnv): an owner, a device node, or
// both.
type Record struct {
	// Owner is the uid and gid the path must have, when set.
	Owner *[2]int
	// Device is set when the path, an empty file in the sandbox, stands for a
	// device node.
	Device *Device
}

// Device is a device node recorded by DeviceXattr.
type Device struct {
	Kind         tree.Kind // tree.CharDev or tree.BlockDev
	Major, Minor uint32
}

// Records maps tree paths to their records.
type Records map[string]Record

// ReadRecords collects the records under a stage's upper directory. It must
// run before the directory is committed (a commit consumes its files).
func ReadRecords(upper string) (Records, error) {
	recs := Records{}
	buf := make([]byte, 64)
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == upper || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		var r Record
		if n, err := unix.Lgetxattr(p, OwnerXattr, buf); err == nil {
			var uid, gid int
			if _, err := fmt.Sscanf(string(buf[:n]), "%d:%d", &uid, &gid); err == nil {
				r.Owner = &[2]int{uid, gid}
			}
		}
		if n, err := unix.Lgetxattr(p, DeviceXattr, buf); err == nil && d.Type().IsRegular() {
			dev, err := parseDevice(string(buf[:n]))
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			r.Device = &dev
		}
		if r.Owner != nil || r.Device != nil {
			rel, _ := filepath.Rel(upper, p)
			recs[filepath.ToSlash(rel)] = r
		}
		return nil
	})
	return recs, err
}

func parseDevice(s string) (Device, error) {
	var kind string
	var d Device
	if _, err := fmt.Sscanf(s, "%s %d %d", &kind, &d.Major, &d.Minor); err != nil {
		return Device{}, fmt.Errorf("device record %q: %w", s, err)
	}
	switch kind {
	case "c":
		d.Kind = tree.CharDev
	case "b":
		d.Kind = tree.BlockDev
	default:
		return Device{}, errors.New("device record " + s + ": unknown kind")
	}
	return d, nil
}

// Apply puts the records into the committed tree t and reports whether it
// changed it.
func (r Records) Apply(t *tree.Tree) bool {
	changed := false
	for i := range t.Entries {
		rec, ok := r[t.Entries[i].Path]
		if !ok {
			continue
		}
		e := &t.Entries[i]
		if rec.Owner != nil {
			e.UID, e.GID = rec.Owner[0], rec.Owner[1]
			changed = true
		}
		if rec.Device != nil && e.Type == tree.File && e.Size == 0 {
			e.Type, e.Major, e.Minor = rec.Device.Kind, rec.Device.Major, rec.Device.Minor
			e.Size, e.Digest = 0, ""
			changed = true
		}
	}
	return changed
}
