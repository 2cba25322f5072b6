// Command bench measures the stage function against baselines measured side
// by side in the same run, and prints one Markdown table row per measure:
//
//  1. local_copy of a 1 GiB file vs cp (MB/s)
//  2. local_copy of a directory of 10,000 4 KiB files vs cp -r (files/s)
//  3. 64 KiB files staged one request each by 8 clients on SQLite vs a Go
//     io.Copy loop on 8 goroutines (requests/s vs files/s)
//  4. cold start, exec to the first staged file, vs a minimal Go HTTP server
//  5. peak RSS (VmHWM) serving a 1 GiB direct_download vs the same process idle
//  6. row 3's requests at LOGGING_LEVEL=INFO with log records written to the
//     store vs to stdout only (requests/s)
//  7. jupyter_copy of a 200 MiB file through a real JupyterHub vs curl
//     uploading the same chunks (MB/s), with the jupyter function's peak RSS
//  8. row 3's requests from 32 clients over two stage processes sharing one
//     MariaDB vs io.Copy on 32 goroutines
//  9. local_copy of a tree of 1,000,000 files of 100 bytes (100 × 100
//     folders of 100) vs cp -r (files/s), with the stage process's peak RSS
//  10. that tree downloaded as a tar (direct_download of the folder) vs
//     tar -cf - into a pipe (files/s), with the peak RSS
//  11. 16 such downloads at once vs 16 tar processes at once, with the
//     peak RSS
//
// Rows 9 to 11 share one tree; BENCH_TREE_FILES sets its number of files
// (for trying them out: BENCH_TREE_FILES=50000 go run ./internal/bench
// -only=9). Each row's peak RSS is that of a stage process started for it.
//
// It runs bin/stage (so `make build` first; `make bench` does both) from the
// repository root, works in a temporary directory on the repository's
// filesystem (the system's temporary folder if it is there, else .data),
// removes it afterwards, logs progress to stderr, prints the table to stdout
// and writes it to bench-results/latest.md and, after a full run of every
// row, into README.md between the bench markers. The ratio is always
// service / baseline.
//
//	go run ./internal/bench [-quick] [-only=N] [-readme=false]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// sizes are the workload of one run.
type sizes struct {
	bigSize    int64 // bytes of the file of rows 1 and 5
	reps       int   // repetitions of rows 1, 2, 6 and 7 (median reported)
	treeFiles  int   // 4 KiB files in the directory of row 2
	smallFiles int   // 64 KiB files (one request each) in row 3
	clients    int   // concurrent clients in row 3
	coldRuns   int   // starts of each binary in row 4 (median reported)
	manyFiles  int   // 100-byte files in the tree of rows 9 to 11
}

var (
	full  = sizes{bigSize: 1 << 30, reps: 5, treeFiles: 10_000, smallFiles: 20_000, clients: 8, coldRuns: 10, manyFiles: 1_000_000}
	quick = sizes{bigSize: 64 << 20, reps: 3, treeFiles: 1_000, smallFiles: 2_000, clients: 8, coldRuns: 5, manyFiles: 50_000}
)

// row is one line of the table.
type row struct {
	n                 int
	name              string
	service, baseline string // measured values, with units
	ratio             float64
	target            string
	met               bool
}

func main() {
	quickFlag := flag.Bool("quick", false, "smaller run for trying it out (64 MiB file, 1,000 files, 2,000 requests, a tree of 50,000 files)")
	only := flag.Int("only", 0, "run only this row (1-11)")
	readme := flag.Bool("readme", true, "after a full run of every row (BENCH_TREE_FILES unset), write the table into README.md")
	flag.Parse()
	if *only < 0 || *only > 11 {
		fmt.Fprintln(os.Stderr, "bench: -only must be 1 to 11")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *quickFlag, *only, *readme); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, quickRun bool, only int, readme bool) error {
	start, startLoad := time.Now(), loadAvg()
	sz := full
	if quickRun {
		sz = quick
	}
	var err error
	if sz.manyFiles, err = treeFilesFromEnv(sz.manyFiles); err != nil {
		return err
	}
	b, err := newBench(sz)
	if err != nil {
		return err
	}
	defer b.close()
	measures := []func(context.Context) (row, error){b.fileCopy, b.treeCopy, b.smallRequests, b.coldStart, b.peakMemory, b.loggingCost, b.jupyterCopy, b.replicas,
		b.treeCopyMany, b.treeTar, b.manyTar}
	var rows []row
	for i, measure := range measures {
		if only != 0 && only != i+1 {
			continue
		}
		logf("row %d of %d, load average %s", i+1, len(measures), loadAvg())
		r, err := measure(ctx)
		if err != nil {
			return fmt.Errorf("row %d: %w", i+1, err)
		}
		rows = append(rows, r)
		fmt.Fprint(os.Stderr, table([]row{r}))
	}
	out := table(rows) + fmt.Sprintf("\nratio = service / baseline. %s run of %s, %s, %s/%s, %d CPUs, load average %s at the start and %s at the end, took %s.\n",
		map[bool]string{true: "Quick", false: "Full"}[quickRun], start.Format(time.RFC3339),
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), startLoad, loadAvg(), time.Since(start).Round(time.Second))
	fmt.Print(out)
	dir := filepath.Join(b.root, "bench-results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(out), 0o644); err != nil {
		return fmt.Errorf("save results: %w", err)
	}
	if readme && !quickRun && only == 0 && sz.manyFiles == full.manyFiles {
		if err := testenv.ReplaceBetween(filepath.Join(b.root, "README.md"), "<!-- bench:start -->", "<!-- bench:end -->", out); err != nil {
			return fmt.Errorf("write the table into README.md: %w", err)
		}
		logf("table written into README.md")
	}
	return nil
}

// loadAvg is the system's load average over 1, 5 and 15 minutes.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], ", ")
	}
	return "?"
}

// table renders rows as Markdown.
func table(rows []row) string {
	var s strings.Builder
	s.WriteString("| # | measure | service | baseline | ratio | target | met |\n")
	s.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		met := "no"
		if r.met {
			met = "yes"
		}
		fmt.Fprintf(&s, "| %d | %s | %s | %s | %.2f× | %s | %s |\n", r.n, r.name, r.service, r.baseline, r.ratio, r.target, met)
	}
	return s.String()
}
