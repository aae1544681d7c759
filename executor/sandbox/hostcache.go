package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// probeCacheTTL bounds how long cached probe results are trusted even when
// nothing they depend on visibly changed.
const probeCacheTTL = 24 * time.Hour

type probeCache struct {
	Key    string `json:"key"`
	Probes probes `json:"probes"`
}

// DetectCached is Detect for builds: without the bwrap run probe (the first
// sandbox's own run is that check; see probeBwrap), and with the results of
// the other process-starting probes kept in file, keyed by what they depend on: this binary, the companion binary
// and bwrap (path, size, mtime), the kernel, the user, TMPDIR and whether the helper is installed.
// A matching entry younger than a day is used; anything else
// (a missing, stale or unreadable file) means probing again. Cheap facts
// (tools, binfmt, kvm, cgroups) are always read afresh. A caller that sees a
// sandbox fail to set up should remove file, so the next run probes again.
// The store gives the file its place (a state directory, see
// store.Store.StateDir); an empty file means there is none, and nothing is
// cached.
func DetectCached(ctx context.Context, file string) (*Host, error) {
	if file == "" {
		return detect(ctx, nil, false)
	}
	key := probeKey()
	if b, err := os.ReadFile(file); err == nil && key != "" {
		var c probeCache
		if fi, err := os.Stat(file); err == nil && time.Since(fi.ModTime()) < probeCacheTTL &&
			json.Unmarshal(b, &c) == nil && c.Key == key {
			return detect(ctx, &c.Probes, false)
		}
	}
	h, err := detect(ctx, nil, false)
	if err != nil || key == "" {
		return h, err
	}
	b, _ := json.Marshal(probeCache{Key: key, Probes: probes{
		UserNamespaces: h.UserNamespaces, BwrapVersion: h.Bwrap.Version,
		Overlay: h.Overlay, OverlayError: h.OverlayError,
	}})
	// Best effort: a cache that cannot be written only costs the next run a probe.
	if tmp, err := os.CreateTemp(filepath.Dir(file), ".host-*.json"); err == nil {
		_, werr := tmp.Write(b)
		if cerr := tmp.Close(); werr == nil && cerr == nil {
			os.Rename(tmp.Name(), file)
		}
		os.Remove(tmp.Name())
	}
	return h, nil
}

// probeKey identifies everything the probes' results depend on, or "" when it
// cannot (then nothing is cached).
func probeKey() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		return ""
	}
	var uts unix.Utsname
	if unix.Uname(&uts) != nil {
		return ""
	}
	ident := func(p string) string {
		fi, err := os.Stat(p)
		if err != nil {
			return ""
		}
		return fmt.Sprintf("%s:%d:%d", p, fi.Size(), fi.ModTime().UnixNano())
	}
	companionMu.Lock()
	id := companionID
	companionMu.Unlock()
	doc, _ := json.Marshal([]string{
		ident(exe), ident(filepath.Join(filepath.Dir(exe), CompanionName)), id, ident(bwrap), unix.ByteSliceToString(uts.Release[:]), unix.ByteSliceToString(uts.Version[:]),
		fmt.Sprint(os.Geteuid(), ":", os.Getegid()), os.TempDir(), fmt.Sprint(helperInstalled.Load()),
	})
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:])
}
