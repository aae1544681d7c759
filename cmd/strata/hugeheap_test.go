package main

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// TestHugeHeap: after hugeHeap, the heap grows into a range flagged for
// transparent huge pages (VmFlags hg), whatever the host's THP mode: a large
// allocation lands in a flagged mapping. The check runs in a fresh process,
// since this test binary's heap is as other tests left it.
func TestHugeHeap(t *testing.T) {
	if strings.Contains(os.Getenv("GODEBUG"), "disablethp=1") {
		t.Skip("GODEBUG=disablethp=1 turns hugeHeap off")
	}
	if _, err := os.Stat("/proc/self/smaps"); err != nil {
		t.Skip("no /proc/self/smaps:", err)
	}
	if os.Getenv("STRATA_TEST_HUGEHEAP") == "child" {
		hugeHeap()
		b := make([]byte, 8<<20)
		b[0] = 1
		flagged, hugeKB, found := mappingOf(t, uintptr(unsafe.Pointer(&b[len(b)/2])))
		if !found {
			t.Fatal("the allocation is in no mapping of /proc/self/smaps")
		}
		if !flagged {
			t.Fatal("an 8 MiB allocation after hugeHeap is not in a mapping flagged hg (MADV_HUGEPAGE)")
		}
		t.Logf("flagged mapping holds %d kB of huge pages", hugeKB)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHugeHeap$", "-test.v")
	cmd.Env = append(os.Environ(), "STRATA_TEST_HUGEHEAP=child")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestHugeHeap") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// mappingOf reads /proc/self/smaps for the mapping holding addr: whether it is
// flagged hg, and its AnonHugePages in kB.
func mappingOf(t *testing.T, addr uintptr) (flagged bool, hugeKB int, found bool) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			a, err1 := strconv.ParseUint(lo, 16, 64)
			b, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				in = uintptr(a) <= addr && addr < uintptr(b)
				found = found || in
				continue
			}
		}
		if !in {
			continue
		}
		switch fields[0] {
		case "AnonHugePages:":
			hugeKB, _ = strconv.Atoi(fields[1])
		case "VmFlags:":
			for _, fl := range fields[1:] {
				flagged = flagged || fl == "hg"
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return flagged, hugeKB, found
}
