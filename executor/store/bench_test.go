package store

import (
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/opencontainers/go-digest"
)

const benchSize = 64 << 20

// BenchmarkSHA256 is the reference for BenchmarkLinkFile: SHA-256 of the same amount of
// data, already in memory, on one core.
func BenchmarkSHA256(b *testing.B) {
	buf := make([]byte, benchSize)
	rand.NewChaCha8([32]byte{}).Read(buf)
	b.SetBytes(benchSize)
	for b.Loop() {
		sha256.Sum256(buf)
	}
}

// BenchmarkLinkFile links a fresh 64 MiB file (in the page cache, on the store's
// filesystem) into the store per iteration: hash, fsync, chmod, link, rename.
func BenchmarkLinkFile(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	dir := b.TempDir()
	buf := make([]byte, benchSize)
	rand.NewChaCha8([32]byte{1}).Read(buf)
	b.SetBytes(benchSize)
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		buf[0], buf[1], buf[2] = byte(i), byte(i>>8), byte(i>>16)
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, _, err := s.LinkFile(ctx, p, 0o644, 0, 0); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(p)
		b.StartTimer()
	}
}

// BenchmarkLinkFileKnown is LinkFile of content already in the store: hashing only.
func BenchmarkLinkFileKnown(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	p := filepath.Join(b.TempDir(), "f")
	buf := make([]byte, benchSize)
	rand.NewChaCha8([32]byte{2}).Read(buf)
	os.WriteFile(p, buf, 0o644)
	q := p + ".copy"
	os.WriteFile(q, buf, 0o644)
	if _, _, err := s.LinkFile(ctx, q, 0o644, 0, 0); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchSize)
	for b.Loop() {
		if _, _, err := s.LinkFile(ctx, p, 0o644, 0, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// digests returns n distinct digests.
func digests(n int) []digest.Digest {
	ds := make([]digest.Digest, n)
	for i := range ds {
		ds[i] = digest.FromString(strconv.Itoa(i))
	}
	return ds
}

// BenchmarkLeaseAdd10k adds 10,000 digests to a fresh lease in one call.
func BenchmarkLeaseAdd10k(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	ds := digests(10000)
	for b.Loop() {
		l, err := s.NewLease(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Add(ctx, ds...); err != nil {
			b.Fatal(err)
		}
		l.Release()
	}
}

// BenchmarkLeaseAdd10kOneByOne adds 10,000 digests one call each, the way a
// build adds objects as it writes them: a shared section and a write each.
func BenchmarkLeaseAdd10kOneByOne(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	ds := digests(10000)
	for b.Loop() {
		l, err := s.NewLease(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		for _, d := range ds {
			if err := l.Add(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
		l.Release()
	}
}

// BenchmarkSharedSection enters and leaves a write section with no other
// holder: the flock calls every object write now pays.
func BenchmarkSharedSection(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	for b.Loop() {
		leave, err := s.shared(ctx)
		if err != nil {
			b.Fatal(err)
		}
		leave()
	}
}

// BenchmarkCommitUpperKnown200 commits an upper directory of 200 small files
// whose contents the store already holds, as the merge stage of the
// BuildStream workload does after a one-leaf change: the cost is per file
// (walk, hash, find the object, pin it to the build's lease), not per byte.
func BenchmarkCommitUpperKnown200(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	files := map[string]string{"out/": ""}
	for i := range 200 {
		files["out/f"+strconv.Itoa(i)] = "leaf " + strconv.Itoa(i) + "\n"
	}
	work := b.TempDir()
	first := filepath.Join(work, "first")
	writeFiles(b, first, files)
	if _, _, err := s.CommitUpper(ctx, nil, first); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		upper := filepath.Join(work, strconv.Itoa(i))
		writeFiles(b, upper, files)
		l, err := s.NewLease(ctx, "build") // a build's: the files are new to it
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, _, err := s.CommitUpper(WithLease(ctx, l), nil, upper); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		l.Release()
		b.StartTimer()
	}
}

// BenchmarkCommitUpperNew200 commits an upper directory of 200 small files
// the store has never seen, as a stage that writes a tree does on a cold
// store: per file, the content is synced before it is named, and the
// directories the names went into are synced once for the tree.
func BenchmarkCommitUpperNew200(b *testing.B) {
	ctx := context.Background()
	s := newStore(b)
	work := b.TempDir()
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		files := map[string]string{"out/": ""}
		for j := range 200 {
			files["out/f"+strconv.Itoa(j)] = "run " + strconv.Itoa(i) + " file " + strconv.Itoa(j) + "\n"
		}
		upper := filepath.Join(work, strconv.Itoa(i))
		writeFiles(b, upper, files)
		b.StartTimer()
		if _, _, err := s.CommitUpper(ctx, nil, upper); err != nil {
			b.Fatal(err)
		}
	}
}
