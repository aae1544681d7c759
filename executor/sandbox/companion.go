package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// The strata binary is ~20 MB and initialises CUE's dependencies at start-up:
// starting it costs tens of milliseconds, and a build started it for every
// stage, as the staging helper and as the built-in stage inside the sandbox.
// The companion binary (cmd/strata-sandbox, a few MB) holds only those two, so
// the helper and built-in stages use it where it is present. It is used only
// when its SHA-256 is the one the strata binary was linked with (make build
// passes it), so a companion from another build never runs a built-in stage
// of this one; without it, strata runs itself for both, as before.

// CompanionName is the file name of the companion binary, looked for in the
// directory of the running executable.
const CompanionName = "strata-sandbox"

var (
	companionMu     sync.Mutex
	companionDigest string
	companionPath   string
	companionDone   bool
)

// UseCompanion sets the digest ("sha256:<hex>") of the companion binary this
// executable was built with; "" (a binary built without one, such as by go
// install) makes the package use this executable instead. Call it in main,
// before anything runs a sandbox.
func UseCompanion(digest string) {
	companionMu.Lock()
	defer companionMu.Unlock()
	companionDigest, companionPath, companionDone = digest, "", false
}

// companion returns the path of the companion binary when it sits next to
// this executable with the digest given to UseCompanion, else "". The file is
// hashed once per process, on first use.
func companion() string {
	companionMu.Lock()
	defer companionMu.Unlock()
	if !companionDone {
		companionDone = true
		if exe, err := os.Executable(); err == nil && companionDigest != "" {
			companionPath = findCompanion(exe, companionDigest)
		}
	}
	return companionPath
}

// findCompanion returns the CompanionName file next to exe when its digest is
// digest, else "".
func findCompanion(exe, digest string) string {
	p := filepath.Join(filepath.Dir(exe), CompanionName)
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	if "sha256:"+hex.EncodeToString(h.Sum(nil)) != digest {
		return ""
	}
	return p
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
