package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// fileCopy is row 1: local_copy of the big file vs cp, in MB/s.
func (b *bench) fileCopy(ctx context.Context) (row, error) {
	rel, err := b.bigSource()
	if err != nil {
		return row{}, err
	}
	src := filepath.Join(b.src, rel)
	if err := readFile(src); err != nil {
		return row{}, err
	}
	cpDir := filepath.Join(b.dir, "cp-file")
	if err := os.MkdirAll(cpDir, 0o755); err != nil {
		return row{}, fmt.Errorf("cp folder: %w", err)
	}
	defer removeAll(cpDir)
	p, err := b.startStage(ctx, "row1")
	if err != nil {
		return row{}, err
	}
	defer p.stopOrWarn()
	mbps := func(d time.Duration) float64 { return perSecond(float64(b.bigSize)/1e6, d) }
	svc, base, err := alternate("row 1", b.reps, "MB/s",
		func(i int) (float64, error) {
			target := fmt.Sprintf("file-%d", i)
			d, err := timed(func() error { return localCopy(ctx, http.DefaultClient, p.url, rel, target) })
			if err != nil {
				return 0, err
			}
			return mbps(d), removeAll(b.staged(target))
		},
		func(i int) (float64, error) {
			target := filepath.Join(cpDir, fmt.Sprintf("file-%d", i))
			d, err := timed(func() error { return command(ctx, "cp", src, target) })
			if err != nil {
				return 0, err
			}
			return mbps(d), removeAll(target)
		})
	if err != nil {
		return row{}, err
	}
	return row{n: 1, name: fmt.Sprintf("local_copy of a %s file vs `cp` (median of %d)", mib(b.bigSize), b.reps),
		service: commas(svc) + " MB/s", baseline: commas(base) + " MB/s", ratio: svc / base,
		target: "≥ 0.9×", met: svc/base >= 0.9}, nil
}

// treeCopy is row 2: local_copy of a directory of small files vs cp -r, in
// files/s.
func (b *bench) treeCopy(ctx context.Context) (row, error) {
	logf("writing %d files of 4 KiB", b.treeFiles)
	for i := range b.treeFiles {
		dir := filepath.Join(b.src, "tree", fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return row{}, fmt.Errorf("source tree: %w", err)
			}
		}
		if err := writeRandom(filepath.Join(dir, fmt.Sprintf("f%05d", i)), 4<<10, uint64(i)); err != nil {
			return row{}, err
		}
	}
	syscall.Sync()
	cpDir := filepath.Join(b.dir, "cp-tree")
	if err := os.MkdirAll(cpDir, 0o755); err != nil {
		return row{}, fmt.Errorf("cp folder: %w", err)
	}
	p, err := b.startStage(ctx, "row2")
	if err != nil {
		return row{}, err
	}
	defer p.stopOrWarn()
	// Copies stay until the end: on ext4 without a journal (as in some VMs)
	// creating files just after deleting many is much slower, as new inodes
	// skip the recently deleted ones.
	filesPerSecond := func(d time.Duration) float64 { return perSecond(float64(b.treeFiles), d) }
	svc, base, err := alternate("row 2", b.reps, "files/s",
		func(i int) (float64, error) {
			target := fmt.Sprintf("tree-%d", i)
			d, err := timed(func() error { return localCopy(ctx, http.DefaultClient, p.url, "tree", target) })
			syscall.Sync()
			return filesPerSecond(d), err
		},
		func(i int) (float64, error) {
			target := filepath.Join(cpDir, fmt.Sprintf("tree-%d", i))
			d, err := timed(func() error { return command(ctx, "cp", "-r", filepath.Join(b.src, "tree"), target) })
			syscall.Sync()
			return filesPerSecond(d), err
		})
	if err != nil {
		return row{}, err
	}
	return row{n: 2, name: fmt.Sprintf("local_copy of a directory of %s × 4 KiB files vs `cp -r` (median of %d)", commas(float64(b.treeFiles)), b.reps),
		service: commas(svc) + " files/s", baseline: commas(base) + " files/s", ratio: svc / base,
		target: "≥ 1×", met: svc/base >= 1}, nil
}

// smallRequests is row 3: one local_copy request per 64 KiB file from
// concurrent keep-alive clients on SQLite, in requests/s, vs the same copies
// by io.Copy on as many goroutines, the two taking turns.
func (b *bench) smallRequests(ctx context.Context) (row, error) {
	n := b.smallFiles
	logf("writing %d files of 64 KiB", n)
	if err := os.MkdirAll(filepath.Join(b.src, "small"), 0o755); err != nil {
		return row{}, fmt.Errorf("source folder: %w", err)
	}
	name := func(i int) string { return fmt.Sprintf("small/f%05d", i) }
	for i := range n {
		if err := writeRandom(filepath.Join(b.src, name(i)), 64<<10, uint64(i)); err != nil {
			return row{}, err
		}
	}

	syscall.Sync()
	// The baseline writes into the folder the service writes into, under
	// other names: how fast ext4 creates a file depends on the block group
	// of its folder (see takeTurns), so both sides get the same one.
	out := b.staged("small")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return row{}, fmt.Errorf("baseline folder: %w", err)
	}
	p, err := b.startStage(ctx, "row3")
	if err != nil {
		return row{}, err
	}
	defer p.stopOrWarn()
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = b.clients, b.clients
	client := &http.Client{Transport: t, Timeout: time.Minute}
	defer t.CloseIdleConnections()

	baseTime, svcTime, errs, err := takeTurns("row 3", n,
		func(first, last int) (time.Duration, []error) {
			return parallel(ctx, last-first, b.clients, func(i int) error {
				return copyFile(filepath.Join(b.src, name(first+i)), filepath.Join(out, fmt.Sprintf("io-copy-f%05d", first+i)))
			})
		},
		func(first, last int) (time.Duration, []error) {
			return parallel(ctx, last-first, b.clients, func(i int) error {
				return localCopy(ctx, client, p.url, name(first+i), name(first+i))
			})
		})
	if err != nil {
		return row{}, err
	}
	base := perSecond(float64(n), baseTime)
	logf("row 3: baseline: %s files/s", commas(base))
	if err := ctx.Err(); err != nil {
		return row{}, err
	}
	for i, err := range errs {
		if i == 5 {
			logf("row 3: ... and %d more errors", len(errs)-5)
			break
		}
		logf("row 3: error: %v", err)
	}
	svc := perSecond(float64(n), svcTime)
	logf("row 3: service: %s requests/s, %d errors", commas(svc), len(errs))
	return row{n: 3, name: fmt.Sprintf("%s × 64 KiB files, one local_copy request each, %d keep-alive clients, SQLite, vs Go `io.Copy` on %d goroutines",
		commas(float64(n)), b.clients, b.clients),
		service: fmt.Sprintf("%s req/s, %d errors", commas(svc), len(errs)), baseline: commas(base) + " files/s",
		ratio: svc / base, target: "≥ 0.5×, no errors", met: svc/base >= 0.5 && len(errs) == 0}, nil
}

// copyFile copies src to a new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// coldStart is row 4: from exec of the stage binary to its first 200 answer
// to a local_copy request, vs a minimal Go HTTP server. A function scaled
// to zero starts against a database that outlives it, so each run gets a
// copy of an already migrated SQLite file; runs on an empty database (which
// migrates first) are measured too and shown beside it.
func (b *bench) coldStart(ctx context.Context) (row, error) {
	baseBin := filepath.Join(b.dir, "coldbaseline")
	logf("row 4: building the baseline server")
	if err := command(ctx, "go", "-C", b.root, "build", "-trimpath", "-o", baseBin, "./internal/bench/coldbaseline"); err != nil {
		return row{}, fmt.Errorf("build the cold-start baseline: %w", err)
	}
	if err := writeRandom(filepath.Join(b.src, "cold.bin"), 4<<10, 4); err != nil {
		return row{}, err
	}
	// One start migrates the template database; it stops cleanly, so the
	// file holds everything (no WAL left beside it).
	if _, _, err := b.coldOnce(ctx, "cold-template", b.stage, b.stageEnv("cold-template")); err != nil {
		return row{}, err
	}
	template := filepath.Join(b.dir, "db", "cold-template.db")
	// Where the port opened is kept too (warm-up runs aside): the time
	// before it is the process's start, after it the first request's.
	var svcListen, baseListen []float64
	svc, base, err := alternate("row 4", b.coldRuns, "ms",
		func(i int) (float64, error) {
			name := fmt.Sprintf("cold-%d", i)
			if err := copyFile(template, filepath.Join(b.dir, "db", name+".db")); err != nil {
				return 0, err
			}
			ms, listen, err := b.coldOnce(ctx, name, b.stage, b.stageEnv(name))
			if i > 0 {
				svcListen = append(svcListen, listen)
			}
			return ms, err
		},
		func(i int) (float64, error) {
			ms, listen, err := b.coldOnce(ctx, fmt.Sprintf("coldbaseline-%d", i), baseBin, nil)
			if i > 0 {
				baseListen = append(baseListen, listen)
			}
			return ms, err
		})
	if err != nil {
		return row{}, err
	}
	var fresh []float64
	for i := range b.coldRuns {
		ms, _, err := b.coldOnce(ctx, fmt.Sprintf("cold-empty-%d", i), b.stage, b.stageEnv(fmt.Sprintf("cold-empty-%d", i)))
		if err != nil {
			return row{}, err
		}
		fresh = append(fresh, ms)
	}
	return row{n: 4, name: fmt.Sprintf("cold start, exec to first staged file, database already migrated (median of %d; when the port opened; on an empty database it migrates first), vs a minimal Go HTTP server", b.coldRuns),
		service:  fmt.Sprintf("%.1f ms (port open at %.1f ms; empty database: %.1f ms)", svc, median(svcListen), median(fresh)),
		baseline: fmt.Sprintf("%.1f ms (port open at %.1f ms)", base, median(baseListen)), ratio: svc / base,
		target: "≤ 1.5×", met: svc/base <= 1.5}, nil
}

// coldOnce starts bin and returns the milliseconds from its exec to the first
// 200 answer to a local_copy request of cold.bin, and to the first
// connection its port accepted, polling the port in a tight loop.
func (b *bench) coldOnce(ctx context.Context, name, bin string, env []string) (first, listen float64, err error) {
	p, err := startProc(name, bin, filepath.Join(b.dir, "logs", name+".log"), env...)
	if err != nil {
		return 0, 0, err
	}
	defer p.stopOrWarn()
	deadline := p.started.Add(30 * time.Second)
	addr := strings.TrimPrefix(p.url, "http://")
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if err := p.alive(ctx); err != nil {
			return 0, 0, err
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%s: no connection after 30 s: %w", name, err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	listen = float64(time.Since(p.started).Microseconds()) / 1000
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for {
		err := localCopy(ctx, client, p.url, "cold.bin", name)
		if err == nil {
			return float64(time.Since(p.started).Microseconds()) / 1000, listen, nil
		}
		if err := p.alive(ctx); err != nil {
			return 0, 0, err
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%s: no success after 30 s: %w", name, err)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// peakMemory is row 5: the stage process's peak RSS after serving the big
// file by direct_download, vs its peak RSS idle just before.
func (b *bench) peakMemory(ctx context.Context) (row, error) {
	rel, err := b.bigSource()
	if err != nil {
		return row{}, err
	}
	if err := readFile(filepath.Join(b.src, rel)); err != nil {
		return row{}, err
	}
	p, err := b.startStage(ctx, "row5")
	if err != nil {
		return row{}, err
	}
	defer p.stopOrWarn()
	pid := p.cmd.Process.Pid
	idle, err := vmHWM(pid)
	if err != nil {
		return row{}, err
	}
	logf("row 5: idle VmHWM %s; downloading %s", mib(idle), mib(b.bigSize))
	got, err := download(ctx, p.url, rel)
	if err != nil {
		return row{}, err
	}
	if got != b.bigSize {
		return row{}, fmt.Errorf("direct_download %s: received %d bytes, want %d", rel, got, b.bigSize)
	}
	peak, err := vmHWM(pid)
	if err != nil {
		return row{}, err
	}
	logf("row 5: VmHWM after the download %s", mib(peak))
	return row{n: 5, name: fmt.Sprintf("peak RSS (VmHWM) of the stage process serving a %s direct_download (all bytes received), vs the same process idle before it", mib(b.bigSize)),
		service: mib(peak), baseline: mib(idle) + " idle", ratio: float64(peak) / float64(idle),
		target: "≤ 64 MiB", met: peak <= 64<<20}, nil
}
