package logging

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// WriterOptions tune a Writer; zero values take the defaults.
type WriterOptions struct {
	Capacity int           // records waiting at most (10,000); more are dropped
	Batch    int           // records per insert at most (500)
	Interval time.Duration // longest wait before a partial batch is written (100ms)
	Timeout  time.Duration // longest one insert may take (5s)
	Report   time.Duration // how often drops are reported on stdout (10s)
	// Stdout reports drops; it must not write to the store itself.
	Stdout *slog.Logger
}

// Writer sends records to a Store in batches from one goroutine. Add never
// blocks: when the queue is full, or an insert fails, records are dropped and
// counted, and the count is reported on stdout: at once when inserts start
// failing, then periodically.
type Writer struct {
	store Store
	o     WriterOptions
	queue chan Record

	closed   atomic.Bool
	dropped  atomic.Int64 // since the last report
	total    atomic.Int64 // since the start
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	// Only the writer's goroutine touches these.
	lastErr    error     // of the last failed insert
	lastReport time.Time // drops are reported at once, then at most every Report
}

// NewWriter starts a Writer to store.
func NewWriter(store Store, o WriterOptions) *Writer {
	if o.Capacity <= 0 {
		o.Capacity = 10_000
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Report <= 0 {
		o.Report = 10 * time.Second
	}
	if o.Stdout == nil {
		o.Stdout = slog.New(New(discard{}, Options{}))
	}
	w := &Writer{store: store, o: o, queue: make(chan Record, o.Capacity),
		stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Add queues r for the store, or drops it when the queue is full or the
// Writer is closed.
func (w *Writer) Add(r Record) {
	if w.closed.Load() {
		w.drop(1)
		return
	}
	select {
	case w.queue <- r:
	default:
		w.drop(1)
	}
}

// Dropped returns how many records were dropped since the start.
func (w *Writer) Dropped() int64 { return w.total.Load() }

func (w *Writer) drop(n int) {
	w.dropped.Add(int64(n))
	w.total.Add(int64(n))
}

// Close stops taking records, writes those queued and reports drops. It
// returns early, dropping the rest, when ctx ends.
func (w *Writer) Close(ctx context.Context) error {
	w.closed.Store(true)
	w.stopOnce.Do(func() { close(w.stop) })
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Writer) run() {
	defer close(w.done)
	batch := make([]Record, 0, w.o.Batch)
	var flush <-chan time.Time // armed while a partial batch waits
	report := time.NewTicker(w.o.Report)
	defer report.Stop()
	for {
		select {
		case r := <-w.queue:
			batch = append(batch, r)
			if len(batch) == 1 {
				flush = time.After(w.o.Interval)
			}
			if len(batch) >= w.o.Batch {
				batch, flush = w.write(batch), nil
			}
		case <-flush:
			batch, flush = w.write(batch), nil
		case <-report.C:
			w.report()
		case <-w.stop:
			for {
				select {
				case r := <-w.queue:
					batch = append(batch, r)
					if len(batch) >= w.o.Batch {
						batch = w.write(batch)
					}
					continue
				default:
				}
				break
			}
			w.write(batch)
			w.report()
			return
		}
	}
}

// write inserts batch, counting it as dropped on failure, and returns it
// emptied for reuse.
func (w *Writer) write(batch []Record) []Record {
	if len(batch) == 0 {
		return batch
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.o.Timeout)
	err := w.store.AppendLogs(ctx, batch)
	cancel()
	if err != nil {
		w.lastErr = err
		w.drop(len(batch))
		if time.Since(w.lastReport) >= w.o.Report {
			w.report() // the store just started failing: say so now
		}
	}
	clear(batch)
	return batch[:0]
}

// report tells stdout how many records were dropped since the last report.
func (w *Writer) report() {
	n := w.dropped.Swap(0)
	if n == 0 {
		return
	}
	w.lastReport = time.Now()
	args := []any{"dropped", n, "dropped_total", w.total.Load()}
	if w.lastErr != nil {
		args = append(args, "error", w.lastErr.Error())
		w.lastErr = nil
	}
	w.o.Stdout.Warn("log records dropped: the log store is full, slow or unavailable", args...)
}
