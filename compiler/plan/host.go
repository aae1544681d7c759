package plan

import (
	"bufio"
	"os"
	"runtime"
	"strings"
	"sync"
)

// HostFingerprint identifies this machine as a "host" build root: its os-release
// ID and VERSION_ID, its architecture and the strata version.
func HostFingerprint(strataVersion string) Host {
	h := Host{OS: runtime.GOOS, Arch: runtime.GOARCH, StrataVersion: strataVersion}
	id, version := osRelease()
	if id != "" {
		h.OS = id
	}
	h.OSVersion = version
	return h
}

// osRelease is /etc/os-release's ID and VERSION_ID, read once per process: a
// command asks for the fingerprint for its compile cache key, the compile and
// every plan it verifies.
var osRelease = sync.OnceValues(func() (id, version string) {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			id = v
		case "VERSION_ID":
			version = v
		}
	}
	return id, version
})
