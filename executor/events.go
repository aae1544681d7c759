package executor

import (
	"encoding/json"
	"strconv"
	"sync"
	"time"
)

// Duration is a time.Duration that JSON encodes as a number of seconds, the
// one time unit of strata's JSON output.
type Duration time.Duration

// Seconds returns d in seconds.
func (d Duration) Seconds() float64 { return time.Duration(d).Seconds() }

// MarshalJSON encodes d as seconds, to the millisecond.
func (d Duration) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, d.Seconds(), 'f', 3, 64), nil
}

// UnmarshalJSON decodes seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s float64
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*d = Duration(s * float64(time.Second))
	return nil
}

// EventKind says what happened to a node.
type EventKind string

// The kinds of event Build reports.
const (
	// EventQueued: the node is part of the build; sent once per node, in plan
	// order, before any work starts.
	EventQueued EventKind = "queued"
	// EventStarted: the node was not cached and its work began.
	EventStarted EventKind = "started"
	// EventCached: the node's result came from the action cache; nothing ran.
	EventCached EventKind = "cached"
	// EventDone: the node's work finished successfully. Every log event of the
	// node comes before it.
	EventDone EventKind = "done"
	// EventFailed: the node failed; Err says why.
	EventFailed EventKind = "failed"
	// EventLog: one line of the node's output (without the newline).
	EventLog EventKind = "log"
	// EventWarning: something the user should see that does not fail the build
	// (a hook with on_failure "warn" that failed, for one).
	EventWarning EventKind = "warning"
	// EventSkipped: the node did not run, because a dependency failed, the build
	// stopped, or the node kind is not implemented yet; Err says which.
	EventSkipped EventKind = "skipped"
	// EventExplain: why the node is rebuilt (with Options.Explain), in Line.
	EventExplain EventKind = "explain"
	// EventWaiting: another strata process is building the node; this build
	// waits for it and then uses its result (Line says which process).
	EventWaiting EventKind = "waiting"
	// EventBytes: Bytes more bytes were transferred for the node (source fetches).
	EventBytes EventKind = "bytes"
)

// Event is one entry of a build's event stream.
type Event struct {
	Time time.Time `json:"time"`
	// Node is the node's ID (strong key); Name its plan name; NodeKind its kind
	// (source, stage, ...) and Type its type (strata.files, tar, ...).
	Node     string    `json:"node"`
	Name     string    `json:"name"`
	NodeKind string    `json:"node_kind"`
	Type     string    `json:"type,omitempty"`
	Kind     EventKind `json:"kind"`
	// Line is a log line (EventLog), a warning (EventWarning) or an explanation
	// (EventExplain).
	Line string `json:"line,omitempty"`
	// Bytes counts transferred bytes (EventBytes).
	Bytes int64 `json:"bytes,omitempty"`
	// Elapsed is the node's run time in seconds (EventDone, EventFailed).
	Elapsed Duration `json:"elapsed,omitempty"`
	// Done counts the build's nodes finished so far (built, cached, failed or
	// skipped, this one included) and Total their number, for "[ 3/12]"
	// progress.
	Done  int `json:"done"`
	Total int `json:"total"`
	// Err is the error of EventFailed and the reason of EventSkipped.
	Err error `json:"-"`
	// Error is Err as text, for JSON.
	Error string `json:"error,omitempty"`
}

// emitter serialises events to the caller's function.
type emitter struct {
	mu    sync.Mutex
	fn    func(Event)
	total int
	done  int
	names map[string]string // node ID → the name the build shows
	// warned: a warning was shown (a build record would not show it again).
	warned bool
}

// hasWarned reports whether a warning was shown.
func (e *emitter) hasWarned() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.warned
}

func (e *emitter) emit(ev Event) {
	if e == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.Err != nil && ev.Error == "" {
		ev.Error = ev.Err.Error()
	}
	if name, ok := e.names[ev.Node]; ok {
		ev.Name = name
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch ev.Kind {
	case EventDone, EventCached, EventFailed, EventSkipped:
		e.done++
	case EventWarning:
		e.warned = true
	}
	ev.Done, ev.Total = e.done, e.total
	if e.fn != nil {
		e.fn(ev)
	}
}
