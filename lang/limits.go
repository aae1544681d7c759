package lang

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// rawLimits are the #Limits fields of a stage, job or hook as CUE gives them.
type rawLimits struct {
	Timeout string `json:"timeout"`
	Memory  string `json:"memory"`
	TmpSize string `json:"tmp_size"`
}

// decodeLimits parses the #Limits fields the schema has already checked the
// form of; what is left to refuse is a value out of range.
func (l *loader) decodeLimits(raw rawLimits, path, posPath string, at Pos) (Limits, bool) {
	var lim Limits
	ok := true
	if raw.Timeout != "" {
		d, err := time.ParseDuration(raw.Timeout)
		if err != nil || d <= 0 {
			l.c.add(l.index.at(posPath+".timeout", at), path+".timeout", "timeout %q is not a positive duration (such as \"30m\" or \"1h30m\")", raw.Timeout)
			ok = false
		}
		lim.Timeout = d
	}
	for _, f := range []struct {
		name, value string
		dst         *int64
	}{{"memory", raw.Memory, &lim.Memory}, {"tmp_size", raw.TmpSize, &lim.TmpSize}} {
		if f.value == "" {
			continue
		}
		n, err := parseSize(f.value)
		if err != nil {
			l.c.add(l.index.at(posPath+"."+f.name, at), path+"."+f.name, "%s %q %v", f.name, f.value, err)
			ok = false
		}
		*f.dst = n
	}
	return lim, ok
}

// parseSize reads "<n><IEC unit>" ("512MiB") as bytes.
func parseSize(s string) (int64, error) {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40}} {
		if digits, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(digits, 10, 64)
			if err != nil || n <= 0 || n > math.MaxInt64>>u.shift {
				return 0, fmt.Errorf("is too large")
			}
			return n << u.shift, nil
		}
	}
	return 0, fmt.Errorf("is not a size with a unit (such as \"512MiB\" or \"4GiB\")")
}
