package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestHugeHeap: after hugeHeap the heap has a range flagged for transparent
// huge pages, and, where the kernel gives them, allocations grow into huge
// pages (AnonHugePages in that mapping).
func TestHugeHeap(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		t.Skip("no transparent huge pages here:", err)
	}
	if strings.Contains(os.Getenv("GODEBUG"), "disablethp=1") {
		t.Skip("GODEBUG=disablethp=1 turns hugeHeap off")
	}
	hugeHeap()
	var keep [][]byte
	for range 2048 {
		b := make([]byte, 8<<10)
		b[0] = 1 // touch it: a fault in the flagged range maps a huge page
		keep = append(keep, b)
	}
	flagged, hugeKB := heapTHP(t)
	if !flagged {
		t.Fatal("no mapping of the process is flagged hg (MADV_HUGEPAGE)")
	}
	if strings.Contains(string(mode), "[never]") {
		return
	}
	if hugeKB == 0 {
		t.Errorf("the flagged mapping holds no huge pages after 16 MiB of allocations (THP %q)", strings.TrimSpace(string(mode)))
	}
	_ = keep
}

// heapTHP reads /proc/self/smaps: whether a mapping is flagged hg, and the
// AnonHugePages of the flagged ones, in kB.
func heapTHP(t *testing.T) (flagged bool, hugeKB int) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var huge int // AnonHugePages of the mapping being read
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 2 && fields[0] == "AnonHugePages:":
			huge, _ = strconv.Atoi(fields[1])
		case len(fields) >= 1 && fields[0] == "VmFlags:":
			for _, fl := range fields[1:] {
				if fl == "hg" {
					flagged = true
					hugeKB += huge
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return flagged, hugeKB
}
