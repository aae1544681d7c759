package registry

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// A/B install layout of a target directory (the RAUC/ostree model).
const (
	slotA = "a"
	slotB = "b"
	// CurrentLink is the symbolic link to the active slot.
	CurrentLink = "current"
	// SlotInfoFile, in a slot, describes what it holds; it is written last,
	// so a slot without it is incomplete.
	SlotInfoFile = ".strata-slot.json"
	targetLock   = ".strata-lock"
)

// InstallOptions configure Install.
type InstallOptions struct {
	// DeviceType is the device's type; required.
	DeviceType string
	// Platform (OS/ARCH) narrows the variant.
	Platform string
	// AllowDowngrade installs a version older than the one installed.
	AllowDowngrade bool
}

// Slot describes what a slot holds.
type Slot struct {
	Slot       string        `json:"slot"`
	Reference  string        `json:"reference"`
	Repository string        `json:"repository"`
	Image      string        `json:"image"`
	Version    string        `json:"version"`
	DeviceType string        `json:"device_type"`
	Digest     digest.Digest `json:"digest"`
	Files      []File        `json:"files"`
}

// Installed is the outcome of Install or Rollback.
type Installed struct {
	Target string `json:"target"`
	// Current is the slot now active; Previous the one kept beside it.
	Current  Slot  `json:"current"`
	Previous *Slot `json:"previous,omitempty"`
}

// Install puts the image ref names, for the device type, into the inactive
// slot of the target directory and makes it current: the tag is resolved to a
// digest once; the device type and (unless AllowDowngrade) the version are
// checked against what is installed as soon as the manifest and config are
// read, before any layer is fetched; every blob is fetched and verified into
// the local layout; the files are copied into
// a staging directory, hashed as they are written and synced, which then
// replaces the inactive slot; and the current link is switched with one atomic
// rename. The previous slot is kept for Rollback. Interrupted at any point, the
// target holds the old current slot or the complete new one.
func (c *Client) Install(ctx context.Context, ref, dir string, opts InstallOptions) (*Installed, error) {
	if opts.DeviceType == "" {
		return nil, fmt.Errorf("install %s: a device type is required", ref)
	}
	r, err := ParseRef(ref)
	if err != nil {
		return nil, err
	}
	if dir, err = safeTarget(dir); err != nil {
		return nil, fmt.Errorf("install: target: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, targetLock))
	if err != nil {
		return nil, fmt.Errorf("install: lock %s: %w", dir, err)
	}
	defer unlock()
	c.step("locked")
	if err := sweepTarget(dir); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	cur, curSlot, err := readCurrent(dir)
	if err != nil && !errors.Is(err, errNoCurrent) {
		return nil, fmt.Errorf("install: %w", err)
	}
	if cur != nil && matchDevice([]string{cur.DeviceType}, opts.DeviceType) < 0 && matchDevice([]string{opts.DeviceType}, cur.DeviceType) < 0 {
		// A mistyped --device-type must not put another board's image on
		// the device (checked before anything is fetched). The same board
		// named more or less specifically (test/probe, test/probe/rev2) is
		// the same device.
		return nil, fmt.Errorf("install %s: %w: %s holds an image for device type %s, not %s (a device that really changed type starts from an empty target)", ref, ErrRefused, dir, cur.DeviceType, opts.DeviceType)
	}
	a, src, err := c.fetchArtifact(ctx, r, opts.DeviceType, opts.Platform, func(a *artifact) error {
		if matchDevice(a.cfg.DeviceTypes, opts.DeviceType) < 0 {
			return fmt.Errorf("%w: the image is for %s, not %s", ErrRefused, strings.Join(a.cfg.DeviceTypes, ", "), opts.DeviceType)
		}
		if cur != nil && !opts.AllowDowngrade && CompareVersions(a.cfg.Version, cur.Version) < 0 {
			return fmt.Errorf("%w: version %s is older than the installed %s (--allow-downgrade to install it)", ErrRefused, a.cfg.Version, cur.Version)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("install %s: %w", ref, err)
	}
	c.step("checked")
	next := slotA
	if curSlot == slotA {
		next = slotB
	}
	p := a.pulled(r, src)
	info := Slot{Slot: next, Reference: a.ref.String(), Repository: r.Name(), Image: a.cfg.Name, Version: a.cfg.Version,
		DeviceType: opts.DeviceType, Digest: a.manD.Digest, Files: p.Files}
	var need int64
	for _, f := range info.Files {
		need += f.Size
	}
	if err := checkSpace(dir, need); err != nil {
		return nil, fmt.Errorf("install %s: %w", ref, err)
	}
	staging := filepath.Join(dir, ".staging-"+rand.Text())
	if err := c.stage(ctx, src, staging, &info); err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("install %s: %w", ref, err)
	}
	c.step("staged")
	// The inactive slot is replaced whole: the old one moves aside, the staged
	// one takes its name. A crash in between leaves no inactive slot, and the
	// current link still points at the active one.
	aside := filepath.Join(dir, ".old-"+rand.Text())
	if err := os.Rename(filepath.Join(dir, next), aside); err != nil && !errors.Is(err, fs.ErrNotExist) {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("install: %w", err)
	}
	c.step("aside")
	if err := os.Rename(staging, filepath.Join(dir, next)); err != nil {
		os.RemoveAll(staging)
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	c.step("slot-written")
	if err := switchCurrent(dir, next, c.step); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	c.step("switched")
	os.RemoveAll(aside)
	out := &Installed{Target: dir, Current: info}
	if cur != nil {
		out.Previous = cur
	}
	return out, nil
}

// stage copies the artifact's files from the local layout into dir, each
// hashed as it is written (so what lands is what was verified, never bytes
// changed after a check), synced, and records the slot's description last.
func (c *Client) stage(ctx context.Context, src *layout, dir string, info *Slot) error {
	// A slot is its installer's alone: root filesystem images hold password
	// hashes and host keys, which other users of the device must not read.
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for i := range info.Files {
		f := &info.Files[i]
		if err := checkTitle(f.Name); err != nil {
			return err
		}
		if err := copyVerified(ctx, src, root, f.Name, ocispec.Descriptor{Digest: f.Digest, Size: f.Size}, func() { c.step("write") }); err != nil {
			return err
		}
		f.Path = f.Name
		c.step("file")
	}
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(dir, SlotInfoFile, b); err != nil {
		return err
	}
	return syncDir(dir)
}

// switchCurrent points the current link at slot with one rename of a fresh
// link over it, then syncs the directory.
func switchCurrent(dir, slot string, step func(string)) error {
	tmp := filepath.Join(dir, ".current-"+rand.Text())
	if err := os.Symlink(slot, tmp); err != nil {
		return err
	}
	step("link-made")
	if err := os.Rename(tmp, filepath.Join(dir, CurrentLink)); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// readCurrent returns the description of the current slot and its name.
func readCurrent(dir string) (*Slot, string, error) {
	link, err := os.Readlink(filepath.Join(dir, CurrentLink))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", errNoCurrent
	}
	if err != nil {
		return nil, "", err
	}
	if link != slotA && link != slotB {
		return nil, "", fmt.Errorf("%s: current points at %q, not slot a or b", dir, link)
	}
	s, err := ReadSlot(dir, link)
	if err != nil {
		return nil, link, err
	}
	return s, link, nil
}

// ReadSlot reads the description of slot (a or b) of a target directory; an
// error if the slot is absent or incomplete.
func ReadSlot(dir, slot string) (*Slot, error) {
	b, err := os.ReadFile(filepath.Join(dir, slot, SlotInfoFile))
	if err != nil {
		return nil, fmt.Errorf("slot %s of %s is incomplete or empty: %w", slot, dir, err)
	}
	var s Slot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("slot %s of %s: %w", slot, dir, err)
	}
	s.Slot = slot
	return &s, nil
}

// VerifySlot re-hashes every file of a slot against its description.
func VerifySlot(dir, slot string) (*Slot, error) {
	s, err := ReadSlot(dir, slot)
	if err != nil {
		return nil, err
	}
	for _, f := range s.Files {
		if err := checkTitle(f.Name); err != nil {
			return nil, err
		}
		fh, err := os.Open(filepath.Join(dir, slot, f.Name))
		if err != nil {
			return nil, fmt.Errorf("slot %s: %w", slot, err)
		}
		_, err = readAllDiscard(newVerifier(fh, ocispec.Descriptor{Digest: f.Digest, Size: f.Size}))
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("slot %s: %s: %w", slot, f.Name, err)
		}
	}
	return s, nil
}

// Rollback makes the other slot of a target directory current again, after
// checking that it is complete and its files match their digests.
func Rollback(dir string) (*Installed, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("rollback: %s: %w", dir, errNoCurrent)
	}
	dir, err := safeTarget(dir)
	if err != nil {
		return nil, fmt.Errorf("rollback: target: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, targetLock))
	if err != nil {
		return nil, fmt.Errorf("rollback: lock %s: %w", dir, err)
	}
	defer unlock()
	if err := sweepTarget(dir); err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	cur, curSlot, err := readCurrent(dir)
	if err != nil {
		return nil, fmt.Errorf("rollback: %s: %w", dir, err)
	}
	other := slotA
	if curSlot == slotA {
		other = slotB
	}
	prev, err := VerifySlot(dir, other)
	if err != nil {
		return nil, fmt.Errorf("rollback: nothing to roll back to: %w", err)
	}
	if err := switchCurrent(dir, other, func(string) {}); err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	return &Installed{Target: dir, Current: *prev, Previous: cur}, nil
}

// Status describes the slots of a target directory.
func Status(dir string) (*Installed, error) {
	cur, curSlot, err := readCurrent(dir)
	if err != nil {
		return nil, err
	}
	out := &Installed{Target: dir, Current: *cur}
	other := slotA
	if curSlot == slotA {
		other = slotB
	}
	if s, err := ReadSlot(dir, other); err == nil {
		out.Previous = s
	}
	return out, nil
}

// sweepTarget removes what an interrupted install left: staging directories,
// a slot moved aside, a link not yet renamed.
func sweepTarget(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".staging-") || strings.HasPrefix(n, ".old-") || strings.HasPrefix(n, ".current-") {
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	return nil
}
