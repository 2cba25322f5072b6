package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// loggingCost is row 6: one local_copy request per 64 KiB file, as in row 3
// but at LOGGING_LEVEL=INFO so every request writes its record, with the
// records also written to the store (LOG_TO_STORE=true, the default) vs to
// stdout only (LOG_TO_STORE=false), in requests/s.
func (b *bench) loggingCost(ctx context.Context) (row, error) {
	n := max(b.smallFiles/4, 500)
	reps := b.reps // a run takes seconds, and one slow run of three decided the row
	dir := filepath.Join(b.src, "logged")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return row{}, fmt.Errorf("source folder: %w", err)
	}
	defer removeAll(dir)
	defer removeAll(b.staged("logged"))
	name := func(i int) string { return fmt.Sprintf("logged/f%05d", i) }
	logf("writing %d files of 64 KiB", n)
	for i := range n {
		if err := writeRandom(filepath.Join(b.src, name(i)), 64<<10, uint64(i)); err != nil {
			return row{}, err
		}
	}
	run := func(toStore bool) func(i int) (float64, error) {
		return func(i int) (float64, error) {
			procName := fmt.Sprintf("row6-store-%v-%d", toStore, i)
			env := append(b.stageEnv(procName), "LOGGING_LEVEL=INFO", fmt.Sprintf("LOG_TO_STORE=%v", toStore))
			p, err := startProc(procName, b.stage, filepath.Join(b.dir, "logs", procName+".log"), env...)
			if err != nil {
				return 0, err
			}
			defer p.stopOrWarn()
			if err := p.waitReady(ctx, 30*time.Second); err != nil {
				return 0, err
			}
			t := http.DefaultTransport.(*http.Transport).Clone()
			t.MaxIdleConns, t.MaxIdleConnsPerHost = b.clients, b.clients
			defer t.CloseIdleConnections()
			client := &http.Client{Transport: t, Timeout: time.Minute}
			d, errs := parallel(ctx, n, b.clients, func(j int) error {
				// Each run its own targets: a target already there
				// would be answered "already available", not copied.
				return localCopy(ctx, client, p.url, name(j), fmt.Sprintf("%s-%s", name(j), procName))
			})
			if len(errs) > 0 {
				return 0, fmt.Errorf("%d of %d requests failed, the first: %w", len(errs), n, errs[0])
			}
			// The copies stay until the row ends: removing them would make
			// the next run's files slower to create (see takeTurns), and
			// every run writes into this one folder for the same reason.
			return perSecond(float64(n), d), nil
		}
	}
	on, off, err := alternate("row 6", reps, "req/s", run(true), run(false))
	if err != nil {
		return row{}, err
	}
	return row{n: 6, name: fmt.Sprintf("%s × 64 KiB files, one local_copy request each, %d clients, SQLite, LOGGING_LEVEL=INFO: log records to the store too (LOG_TO_STORE=true) vs stdout only (median of %d)",
		commas(float64(n)), b.clients, reps),
		service: commas(on) + " req/s", baseline: commas(off) + " req/s", ratio: on / off,
		target: "≥ 0.9× (≤ 10% cost)", met: on/off >= 0.9}, nil
}
