package sandbox

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"sync"
)

// The strata binary is ~20 MB and initialises CUE's dependencies at start-up:
// starting it costs tens of milliseconds, and a build started it for every
// stage, as the staging helper and as the built-in stage inside the sandbox.
// The companion binary (cmd/strata-sandbox, a few MB) holds only those two, so
// the helper and built-in stages use it where it is present. It is used only
// when its Go build ID is the one the strata binary was linked with (make
// build passes it), so a companion from another build never runs a built-in
// stage of this one; without it, strata runs itself for both, as before. The
// build ID ends with a hash of the binary's content (cmd/go's contentID) and
// sits in an ELF note near the start of the file: checking it reads a few
// kilobytes, where hashing the whole file would cost every build, no-op
// builds included, a couple of milliseconds.

// CompanionName is the file name of the companion binary, looked for in the
// directory of the running executable.
const CompanionName = "strata-sandbox"

var (
	companionMu   sync.Mutex
	companionID   string
	companionPath string
	companionDone bool
)

// UseCompanion sets the Go build ID (as `go tool buildid` prints it) of the
// companion binary this executable was built with; "" (a binary built without
// one, such as by go install) makes the package use this executable instead.
// Call it in main, before anything runs a sandbox.
func UseCompanion(buildID string) {
	companionMu.Lock()
	defer companionMu.Unlock()
	companionID, companionPath, companionDone = buildID, "", false
}

// companion returns the path of the companion binary when it sits next to
// this executable with the build ID given to UseCompanion, else "". It looks
// once per process, on first use.
func companion() string {
	companionMu.Lock()
	defer companionMu.Unlock()
	if !companionDone {
		companionDone = true
		if exe, err := os.Executable(); err == nil && companionID != "" {
			companionPath = findCompanion(exe, companionID)
		}
	}
	return companionPath
}

// findCompanion returns the CompanionName file next to exe when its Go build
// ID is id, else "".
func findCompanion(exe, id string) string {
	p := filepath.Join(filepath.Dir(exe), CompanionName)
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	if got, err := goBuildID(p); err != nil || got != id {
		return ""
	}
	return p
}

// goBuildID reads the Go build ID of the ELF executable p from its
// .note.go.buildid note (name "Go", type 4), as `go tool buildid` does.
func goBuildID(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil {
		return "", os.ErrNotExist
	}
	note, err := s.Data()
	if err != nil {
		return "", err
	}
	// namesz, descsz, type, then the name padded to 4 bytes and the desc.
	if len(note) < 16 {
		return "", os.ErrNotExist
	}
	order := f.ByteOrder
	namesz, descsz, typ := order.Uint32(note), order.Uint32(note[4:]), order.Uint32(note[8:])
	if namesz != 4 || typ != 4 || !bytes.Equal(note[12:16], []byte("Go\x00\x00")) || uint64(len(note)) < 16+uint64(descsz) {
		return "", os.ErrNotExist
	}
	return string(note[16 : 16+descsz]), nil
}

// BuiltinBinary returns the static binary to bind at BinaryPath for built-in
// stages (run there as `strata builtin TYPE`): the companion binary when
// present and matching (see UseCompanion), else this executable.
func BuiltinBinary() (string, error) {
	if p := companion(); p != "" {
		return p, nil
	}
	return os.Executable()
}
