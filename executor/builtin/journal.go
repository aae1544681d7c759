package builtin

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sync"

	"github.com/strata-build/strata/executor/tree"
)

// Paths and variables of the channel between built-in stages and the executor.
// A sandbox cannot always hold what a tree needs: without root, or in a user
// namespace, a stage cannot set most owners, make device nodes, or even see the
// owners of the trees it reads (every file appears to be root's). So built-in
// stages (and only they: the executor binds these paths for built-ins alone)
// write what they mean into a journal the executor applies to the committed
// tree, and read owners from the manifests of the trees they were given. A
// stage's own files, xattrs included, are never taken as strata's bookkeeping.
const (
	// RecordsEnv names the journal file, inside the sandbox, when there is one.
	RecordsEnv = "STRATA_RECORDS"
	// RecordsPath is where the executor binds the journal, read-write.
	RecordsPath = "/run/strata/records"
	// ManifestsDir holds the manifests of the stage's trees, read-only:
	// tree.json for the tree the stage changes and inputs/NAME.json for each
	// input (trees as strata stored them, owners included).
	ManifestsDir = "/run/strata/manifests"
)

// Record is what a built-in stage meant for one tree path: an owner, a
// device node, or both.
type Record struct {
	// Path is the tree path, slash-separated, relative to the tree root.
	Path string `json:"path"`
	// Owner is the uid and gid the path must have, when set.
	Owner *[2]int `json:"owner,omitempty"`
	// Device is set when the path, an empty file in the sandbox, stands for a
	// device node.
	Device *Device `json:"device,omitempty"`
}

// Device is a device node.
type Device struct {
	Kind  tree.Kind `json:"kind"` // tree.CharDev or tree.BlockDev
	Major uint32    `json:"major"`
	Minor uint32    `json:"minor"`
}

// Records maps tree paths to what was recorded last for them.
type Records map[string]Record

// journal appends records to the file the executor gave and remembers them, so
// a stage reads back the owner it set.
type journal struct {
	mu   sync.Mutex
	w    io.Writer
	last Records
}

func newJournal(w io.Writer) *journal { return &journal{w: w, last: Records{}} }

// record appends r, merged over what was recorded for its path before.
func (j *journal) record(r Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	prev := j.last[r.Path]
	if r.Owner == nil {
		r.Owner = prev.Owner
	}
	if r.Device == nil {
		r.Device = prev.Device
	}
	j.last[r.Path] = r
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = j.w.Write(append(b, '\n'))
	return err
}

// forget drops the record of a path the stage removed.
func (j *journal) forget(p string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.last[p]; !ok {
		return nil
	}
	delete(j.last, p)
	b, _ := json.Marshal(Record{Path: p})
	_, err := j.w.Write(append(b, '\n'))
	return err
}

func (j *journal) owner(p string) (*[2]int, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, ok := j.last[p]
	return r.Owner, ok && r.Owner != nil
}

// ReadRecords reads the journal a stage wrote: the last record of each path
// wins, and a record with neither owner nor device forgets the path.
func ReadRecords(r io.Reader) (Records, error) {
	recs := Records{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("records line %d: %w", n, err)
		}
		if rec.Path == "" || path.Clean(rec.Path) != rec.Path || path.IsAbs(rec.Path) {
			return nil, fmt.Errorf("records line %d: bad path %q", n, rec.Path)
		}
		if rec.Device != nil && rec.Device.Kind != tree.CharDev && rec.Device.Kind != tree.BlockDev {
			return nil, fmt.Errorf("records line %d: %s: device kind %q", n, rec.Path, rec.Device.Kind)
		}
		if rec.Owner == nil && rec.Device == nil {
			delete(recs, rec.Path)
			continue
		}
		recs[rec.Path] = rec
	}
	return recs, sc.Err()
}

// ReadRecordsFile reads the journal at p (see ReadRecords).
func ReadRecordsFile(p string) (Records, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadRecords(f)
}

// Apply puts the records into the committed tree t and reports whether it
// changed it.
func (r Records) Apply(t *tree.Tree) bool {
	changed := false
	for i := range t.Entries {
		rec, ok := r[t.Entries[i].Path]
		if !ok {
			continue
		}
		e := &t.Entries[i]
		if rec.Owner != nil && (e.UID != rec.Owner[0] || e.GID != rec.Owner[1]) {
			e.UID, e.GID = rec.Owner[0], rec.Owner[1]
			changed = true
		}
		if rec.Device != nil && e.Type == tree.File && e.Size == 0 {
			e.Type, e.Major, e.Minor = rec.Device.Kind, rec.Device.Major, rec.Device.Minor
			e.Size, e.Digest = 0, ""
			changed = true
		}
	}
	return changed
}

// readManifest loads a manifest the executor bound into the sandbox; a
// missing one is nil.
func readManifest(p string) (*tree.Tree, error) {
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t, err := tree.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", p, err)
	}
	return t, nil
}
