package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
)

// failure is a failure record: the log of the last failed build of a key.
type failure struct {
	Key string        `json:"key"`
	Log digest.Digest `json:"log"`
}

func (s *Store) failurePath(key string) string {
	return filepath.Join(s.dir, dirFailures, key+".json")
}

// PutFailure records log, a blob in the store, as the log of the last failed
// build of key, replacing any previous record. The record keeps the log from GC
// and is collected with action entries, least recently used first; it is never
// a cache hit (GetAction does not see it), and PutAction of the key removes it.
// A missing log is an error wrapping ErrNotFound.
func (s *Store) PutFailure(ctx context.Context, key string, log digest.Digest) error {
	if err := s.putFailure(ctx, key, log); err != nil {
		return fmt.Errorf("store %s: put failure %s: %w", s.dir, key, err)
	}
	return nil
}

func (s *Store) putFailure(ctx context.Context, key string, log digest.Digest) error {
	if err := validKey(key); err != nil {
		return err
	}
	if _, err := checkDigest(log); err != nil {
		return err
	}
	b, err := json.Marshal(failure{Key: key, Log: log})
	if err != nil {
		return err
	}
	_, err = s.writeRecord(ctx, s.failurePath(key), b, func() error {
		if !s.HasBlob(log) {
			return fmt.Errorf("log %s: %w", log, ErrNotFound)
		}
		return nil
	})
	return err
}

// LastFailure returns the log PutFailure last recorded for key and marks the
// record used now. No record, or a record whose log is gone, is an error
// wrapping ErrNotFound. With a lease (see WithLease) the log is added to it.
func (s *Store) LastFailure(ctx context.Context, key string) (digest.Digest, error) {
	if err := validKey(key); err != nil {
		return "", fmt.Errorf("store %s: last failure: %w", s.dir, err)
	}
	p := s.failurePath(key)
	f, err := readFailure(p)
	if err != nil {
		return "", fmt.Errorf("store %s: failure %s: %w", s.dir, key, err)
	}
	if err := s.pin(ctx, kindBlob, f.Log.Encoded()); err != nil {
		return "", err
	}
	if !s.HasBlob(f.Log) {
		return "", fmt.Errorf("store %s: failure %s: log %s gone: %w", s.dir, key, f.Log, ErrNotFound)
	}
	if err := s.touch(p); err != nil {
		return "", fmt.Errorf("store %s: failure %s: %w", s.dir, key, err)
	}
	return f.Log, nil
}

// readFailure reads the failure record at p; a malformed one is ErrNotFound.
func readFailure(p string) (*failure, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var f failure
	if json.Unmarshal(b, &f) != nil || validKey(f.Key) != nil || filepath.Base(p) != f.Key+".json" {
		return nil, fmt.Errorf("malformed record: %w", ErrNotFound)
	}
	if _, err := checkDigest(f.Log); err != nil {
		return nil, fmt.Errorf("malformed record: %w", ErrNotFound)
	}
	return &f, nil
}
