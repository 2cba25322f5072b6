package staging

import (
	"context"
	"io"
	"sync/atomic"
	"time"
)

// Request is one staging request, whichever door it came through.
type Request struct {
	Method       string `json:"method"`
	Username     string `json:"username"`
	Source       string `json:"local_path_on_storage"`
	Target       string `json:"relative_path"`
	JupyterToken string `json:"jupyter_token,omitempty"` // never stored, never logged

	// EventKey identifies a delivered event (see EventKey()); a redelivery
	// with the same key returns the first outcome.
	EventKey string `json:"-"`
	// OperationID names a pending operation this request completes (an async
	// request handed over as an event).
	OperationID string `json:"operation_id,omitempty"`
	// DID is a Rucio data identifier (scope:name) to stage instead of a
	// path: its replica is found in the local RSE, or awaited.
	DID string `json:"did,omitempty"`
	// NoWait refuses (404) a DID whose replica is not there, instead of
	// waiting for it: a download cannot wait.
	NoWait bool `json:"-"`
	// EventSource and EventID are those of the event the request came in
	// by, so a function handing it on to another keeps its identity (and
	// the other's redelivery check).
	EventSource string `json:"-"`
	EventID     string `json:"-"`
	// CallerToken is the token the caller proved who they are with
	// (AUTH_MODE=jupyterhub), handed on with the request; never stored,
	// never logged.
	CallerToken string `json:"-"`
}

// DIDLocator finds a Rucio DID's replica in the source storage.
type DIDLocator interface {
	// Locate returns the source path (for Request.Source) of did's replica
	// and whether the replica is there yet.
	Locate(did string) (source string, present bool, err error)
}

// Forwarder is a method that another function carries out. The pipeline
// hands the request to Forward instead of preparing, recording and running
// it here; the other function records the operation.
type Forwarder interface {
	Forward(ctx context.Context, req *Request) (*Outcome, error)
}

// Method is a way of staging. Prepare checks the request and resolves its
// paths without changing anything; the returned Plan runs under the target's
// lock once the operation is recorded.
type Method interface {
	Name() string
	Prepare(ctx context.Context, req *Request) (*Plan, error)
}

// Plan is a prepared staging.
type Plan struct {
	// Lock names what the plan writes (see LockKey); "" when it writes
	// nothing another request could write at the same time.
	Lock string
	// Source is the resolved source path, recorded with the operation.
	Source string
	// Run does the work. It reports progress through job.
	Run func(ctx context.Context, job *Job) (*Result, error)
}

// Job is a running operation as a method sees it.
type Job struct {
	Operation *Operation
	Request   *Request
	total     atomic.Int64
	done      atomic.Int64
}

// SetTotal records how many bytes the job will move.
func (j *Job) SetTotal(n int64) { j.total.Store(n) }

// Add records n more bytes moved.
func (j *Job) Add(n int64) { j.done.Add(n) }

// Counts returns the total and the bytes moved so far.
func (j *Job) Counts() (total, done int64) { return j.total.Load(), j.done.Load() }

// Result is what a successful plan returns.
type Result struct {
	Message string
	Bytes   int64
	// Download, when set, is streamed by the door; the operation is finished
	// when the stream ends (Outcome.Done).
	Download *Download
}

// Download is content for the door to send to the client.
type Download struct {
	Name    string // file name offered to the client
	Size    int64  // -1 when unknown (a tar stream)
	ModTime time.Time
	// File is a seekable file (Range requests work); nil for streams.
	File io.ReadSeekCloser
	// WriteTo writes a stream (a directory as tar) when File is nil.
	WriteTo func(ctx context.Context, w io.Writer, job *Job) error
}
