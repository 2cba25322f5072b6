package staging

import (
	"context"
	"io"
	"sync/atomic"
	"time"
)

// Method is a way of staging. It declares what it is (Name, Traits);
// Prepare checks a request and resolves its paths without changing
// anything, and the returned Plan runs once the operation is recorded.
type Method interface {
	Name() string
	Traits() Traits
	Prepare(ctx context.Context, req *Request) (*Plan, error)
}

// Traits are what the pipeline and the doors need to know of a method.
type Traits struct {
	// Function is the function that runs the method; another function
	// hands it there (see Service.Peers), and a Trigger routes its events
	// there.
	Function string
	// Streams: the outcome is content the door streams to its client, so
	// the method takes one item over HTTP: no batch, no async, no event,
	// no waiting for a DID's replica.
	Streams bool
	// NeedsTarget: it writes to relative_path in the user's area.
	NeedsTarget bool
	// TempOutput: a run cut short leaves temporary output, which the
	// method removes as a Cleaner when its operation is swept.
	TempOutput bool
	// JupyterToken: it takes the user's JupyterHub token (jupyter_token).
	JupyterToken bool
}

// Cleaner is a method that leaves temporary output behind when its run is
// cut short. Cleanup removes what op left, where its record says.
type Cleaner interface {
	Cleanup(ctx context.Context, op *Operation) error
}

// Plan is a prepared staging.
type Plan struct {
	// Lock names what the plan writes (see LockKey); "" when it writes
	// nothing another request could write at the same time.
	Lock string
	// Run does the work. It reports progress through job.
	Run func(ctx context.Context, job *Job) (*Result, error)
	// Files is how many files Run, and a download's stream after it, may
	// hold open at once, folders and connections included; 0 is
	// DefaultFiles. The work is admitted only while the process's bound
	// (MAX_OPEN_FILES) has room for them.
	Files int
}

// Job is a running operation as a method sees it.
type Job struct {
	Operation *Operation
	Request   *Request
	total     atomic.Int64
	done      atomic.Int64
	confirm   func(ctx context.Context) error // set by the run
}

// Confirm is called by a job right before it shows its output under the
// name the user sees (puts a copy in place): it makes sure the operation
// is still this replica's, so that nobody has taken it for dead and
// removed what it wrote. It costs nothing while the lease was renewed
// lately; otherwise it renews it, waiting while the store is away. After
// an error the job must not show its output, and removes it.
func (j *Job) Confirm(ctx context.Context) error {
	if j.confirm == nil {
		return nil
	}
	return j.confirm(ctx)
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
	WriteTo func(ctx context.Context, w io.Writer) error
}

// DIDLocator finds a Rucio DID's replica in the source storage.
type DIDLocator interface {
	// Locate returns the source path of did's replica, relative to the
	// source storage, and whether the replica is there yet.
	Locate(did string) (source string, present bool, err error)
}

// Peer is another function that runs some methods: Run hands it a
// recorded, pending request (OperationID set) and waits for its outcome.
type Peer interface {
	Run(ctx context.Context, caller Caller, req *Request) error
}

// Handoff passes an async request, recorded as pending (OperationID set),
// to whoever runs it: an event to a broker (K_SINK). Without one the
// service runs it in this process.
type Handoff interface {
	Handoff(ctx context.Context, req *Request) error
}

// Notifier tells someone the outcome of work nobody waits for: requests
// completed or expired in the background.
type Notifier interface {
	Notify(ctx context.Context, op *Operation)
}
