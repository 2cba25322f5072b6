package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// replicas is row 8: one local_copy request per 64 KiB file, as in row 3,
// from 32 keep-alive clients spread over two stage processes sharing one
// MariaDB, as replicas do, vs io.Copy on 32 goroutines, the two taking
// turns.
func (b *bench) replicas(ctx context.Context) (row, error) {
	const clients = 32
	n := b.smallFiles
	dir := filepath.Join(b.src, "replicas")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return row{}, fmt.Errorf("source folder: %w", err)
	}
	name := func(i int) string { return fmt.Sprintf("replicas/f%05d", i) }
	logf("writing %d files of 64 KiB", n)
	for i := range n {
		if err := writeRandom(filepath.Join(b.src, name(i)), 64<<10, uint64(i)); err != nil {
			return row{}, err
		}
	}
	syscall.Sync()
	// The baseline writes into the folder the service writes into (see
	// row 3).
	out := b.staged("replicas")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return row{}, fmt.Errorf("baseline folder: %w", err)
	}
	logf("row 8: starting MariaDB")
	server, err := testenv.StartMariaDB(b.dir, "256M")
	if err != nil {
		return row{}, err
	}
	defer server.Remove()
	url, err := server.CreateDatabase("staging")
	if err != nil {
		return row{}, err
	}
	var procs []*proc
	for i := range 2 {
		procName := fmt.Sprintf("row8-%d", i)
		env := append(b.stageEnv(procName), "DATABASE_URL="+url)
		p, err := startProc(procName, b.stage, filepath.Join(b.dir, "logs", procName+".log"), env...)
		if err != nil {
			return row{}, err
		}
		defer p.stopOrWarn()
		if err := p.waitReady(ctx, 60*time.Second); err != nil {
			return row{}, err
		}
		procs = append(procs, p)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = clients, clients
	client := &http.Client{Transport: t, Timeout: time.Minute}
	defer t.CloseIdleConnections()
	// The server's counters around the row say what a request costs it:
	// statements executed (the floor is an insert and an update) and
	// commits. The stage processes' own background work (sweeps) is
	// counted too, so the figures are an upper bound.
	counters := []string{"Com_stmt_execute", "Questions", "Handler_commit"}
	before, err := server.Status(counters...)
	if err != nil {
		return row{}, err
	}
	baseTime, svcTime, errs, err := takeTurns("row 8", n,
		func(first, last int) (time.Duration, []error) {
			return parallel(ctx, last-first, clients, func(i int) error {
				return copyFile(filepath.Join(b.src, name(first+i)), filepath.Join(out, fmt.Sprintf("io-copy-f%05d", first+i)))
			})
		},
		func(first, last int) (time.Duration, []error) {
			return parallel(ctx, last-first, clients, func(i int) error {
				return localCopy(ctx, client, procs[i%2].url, name(first+i), name(first+i))
			})
		})
	if err != nil {
		return row{}, err
	}
	base := perSecond(float64(n), baseTime)
	logf("row 8: baseline: %s files/s", commas(base))
	if err := ctx.Err(); err != nil {
		return row{}, err
	}
	for i, err := range errs {
		if i == 5 {
			logf("row 8: ... and %d more errors", len(errs)-5)
			break
		}
		logf("row 8: error: %v", err)
	}
	after, err := server.Status(counters...)
	if err != nil {
		return row{}, err
	}
	per := func(name string) float64 { return float64(after[name]-before[name]) / float64(n) }
	svc := perSecond(float64(n), svcTime)
	logf("row 8: service: %s requests/s, %d errors; per request %.2f statements executed (%.2f queries in all), %.2f commits",
		commas(svc), len(errs), per("Com_stmt_execute"), per("Questions"), per("Handler_commit"))
	return row{n: 8, name: fmt.Sprintf("%s × 64 KiB files, one local_copy request each, %d keep-alive clients over two stage processes sharing one MariaDB, vs Go `io.Copy` on %d goroutines",
		commas(float64(n)), clients, clients),
		service:  fmt.Sprintf("%s req/s, %d errors; %.2f statements and %.2f commits per request on MariaDB", commas(svc), len(errs), per("Com_stmt_execute"), per("Handler_commit")),
		baseline: commas(base) + " files/s",
		ratio:    svc / base, target: "≥ 0.35×, no errors", met: svc/base >= 0.35 && len(errs) == 0}, nil
}
