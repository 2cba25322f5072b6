package staging

import (
	"context"
	"sync"
)

// Work in flight is bounded per process, twice, so that a flood is
// answered 429 (TooMany, with Retry-After) instead of running the process
// out of memory or of file descriptors:
//
//   - operations (Service.MaxInflight, MAX_INFLIGHT): stagings running in
//     this process, downloads still streaming, async requests run here in
//     the background, and requests waiting here for the function that runs
//     them;
//   - open files (Service.MaxOpenFiles, MAX_OPEN_FILES): what those
//     operations may hold open at once, as their plans declare
//     (Plan.Files), below the process's own limit, so the listener, the
//     store's connections and the health checks always have descriptors
//     left.
//
// A request takes its share in the one admission path (Service.handle and
// resume), after it is checked and prepared, which only reads, and before
// it is recorded: a refused request leaves no record, so a flood cannot
// bloat the store. A request that is already recorded (a hand-off from a
// broker or from the stage function, a request completed by its DID's
// replica) is refused with its record left pending, and its sender
// redelivers it (brokers retry 429). The share is let go when the work ends
// here: when a run is over (just before its outcome is recorded), when a
// download has streamed, when a background run ends, when the request is
// answered otherwise.

// DefaultFiles is what a plan that declares no Files holds open at once:
// the file it reads, the one it writes, the target folder, and the folder
// an os.Root holds for a moment while it resolves a path.
const DefaultFiles = 4

// peerFiles is what a request waiting for another function holds: its
// connection to that function.
const peerFiles = 1

// limiter counts the operations and open files of the work in flight. A
// bound of 0 or less is no bound.
type limiter struct {
	maxOps, maxFiles int

	mu         sync.Mutex
	ops, files int
}

// slot is what one piece of work holds of a limiter. It has one owner,
// who lets it go once (release) or passes it on to another (pass).
type slot struct {
	l          *limiter
	ops, files int
}

// take holds ops operations and files open files, or fails with TooMany
// when either bound would be passed. More files than the bound itself are
// taken as the whole bound: such work runs alone rather than never.
func (l *limiter) take(ops, files int) (*slot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxFiles > 0 {
		files = min(files, l.maxFiles)
	}
	if (l.maxOps > 0 && l.ops+ops > l.maxOps) || (l.maxFiles > 0 && l.files+files > l.maxFiles) {
		return nil, busy()
	}
	l.ops += ops
	l.files += files
	return &slot{l: l, ops: ops, files: files}, nil
}

// inUse returns the operations and open files held.
func (l *limiter) inUse() (ops, files int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ops, l.files
}

// release gives back what sl holds; a nil or released slot gives back
// nothing.
func (sl *slot) release() {
	if sl == nil || sl.l == nil {
		return
	}
	sl.l.mu.Lock()
	sl.l.ops -= sl.ops
	sl.l.files -= sl.files
	sl.l.mu.Unlock()
	sl.l = nil
}

// pass hands what sl holds to a new owner (a download's stream, a run in
// the background), leaving sl empty, so its first owner's release gives
// back nothing.
func (sl *slot) pass() *slot {
	if sl == nil {
		return nil
	}
	p := *sl
	sl.l = nil
	return &p
}

// busy is the answer when the process is full.
func busy() error {
	return Errorf(TooMany, "Too much staging in flight here: try again shortly")
}

// limit is the service's limiter, built once from its bounds.
func (s *Service) limit() *limiter {
	s.limitOnce.Do(func() { s.limiter = &limiter{maxOps: s.MaxInflight, maxFiles: s.MaxOpenFiles} })
	return s.limiter
}

// InFlight returns the operations and open files the work in flight in
// this process holds.
func (s *Service) InFlight() (ops, files int) { return s.limit().inUse() }

// files is what p holds open at once.
func (p *Plan) files() int {
	if p.Files > 0 {
		return p.Files
	}
	return DefaultFiles
}

// reserve takes what req's work holds in this process, an operation and
// files open at once, less what the door already holds for it
// (opt.held). A refusal is counted and logged at debug level only: a
// flood of them must not fill the log store either.
func (s *Service) reserve(ctx context.Context, req *Request, opt Options, files int) (*slot, error) {
	ops := 1
	if h := opt.held; h != nil {
		ops, files = max(0, ops-h.ops), max(0, files-h.files)
	}
	sl, err := s.limit().take(ops, files)
	if err != nil {
		recordOutcome(ctx, req.Method, outcomeRefused, 0, 0) // a method admit found
		s.logger().DebugContext(ctx, "staging refused: too much in flight", "method", req.Method,
			"username", req.Username, "operation", req.OperationID)
	}
	return sl, err
}
