package plan

import (
	"bufio"
	"os"
	"runtime"
	"strings"
)

// HostFingerprint identifies this machine as a "host" build root: its os-release
// ID and VERSION_ID, its architecture and the strata version.
func HostFingerprint(strataVersion string) Host {
	h := Host{OS: runtime.GOOS, Arch: runtime.GOARCH, StrataVersion: strataVersion}
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return h
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
			h.OS = v
		case "VERSION_ID":
			h.OSVersion = v
		}
	}
	return h
}
