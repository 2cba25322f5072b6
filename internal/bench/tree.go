package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// The tree of rows 9 to 11: small files over three levels of folders.
const (
	treeFileSize    = 100
	treeConcurrency = 16 // downloads (and tar processes) at once in row 11
)

// treeFilesFromEnv is BENCH_TREE_FILES, the number of files of rows 9 to
// 11's tree when set (for trying them out on a smaller tree), else def.
func treeFilesFromEnv(def int) (int, error) {
	v := os.Getenv("BENCH_TREE_FILES")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("BENCH_TREE_FILES=%q: want a number of files, at least 1", v)
	}
	return n, nil
}

// manyTree makes the tree of rows 9 to 11 (once) under src/million and
// returns its description.
func (b *bench) manyTree() (testenv.Tree, error) {
	tree := testenv.NewTree(b.manyFiles, treeFileSize)
	if b.manyMade {
		return tree, nil
	}
	logf("writing a tree of %s files of %d bytes in %s folders", commas(float64(tree.Files)), treeFileSize, commas(float64(tree.Folders())))
	start, step := time.Now(), max(tree.Files/10, 1)
	var mu sync.Mutex
	next := step
	err := tree.Write(filepath.Join(b.src, "million"), 4, func(done int) {
		mu.Lock()
		defer mu.Unlock()
		if done >= next && done < tree.Files {
			logf("tree: %s of %s files written", commas(float64(done)), commas(float64(tree.Files)))
			next += step
		}
	})
	if err != nil {
		return tree, err
	}
	syscall.Sync() // no writeback of it during the measures
	logf("tree written in %s", time.Since(start).Round(time.Second))
	b.manyMade = true
	return tree, nil
}

// watch logs what is running every 10 s, with the stage process's resident
// and peak memory when pid is not 0, until the returned function is called.
func watch(what string, pid int) func() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Second):
			}
			if pid == 0 {
				logf("%s: %s so far", what, time.Since(start).Round(time.Second))
				continue
			}
			rss, _ := vmStatus(pid, "VmRSS:")
			peak, _ := vmHWM(pid)
			logf("%s: %s so far, RSS %s, peak %s", what, time.Since(start).Round(time.Second), mib(rss), mib(peak))
		}
	}()
	return func() { close(stop); <-done }
}

// treeCopyMany is row 9: local_copy of the tree vs cp -r, in files/s, with
// the stage process's peak RSS.
func (b *bench) treeCopyMany(ctx context.Context) (row, error) {
	tree, err := b.manyTree()
	if err != nil {
		return row{}, err
	}
	files := float64(tree.Files)
	cpTarget := filepath.Join(b.dir, "cp-million")
	logf("row 9: baseline, cp -r of %s files", commas(files))
	stopWatch := watch("row 9: cp -r", 0)
	d, err := timed(func() error { return command(ctx, "cp", "-r", filepath.Join(b.src, "million"), cpTarget) })
	stopWatch()
	if err != nil {
		return row{}, err
	}
	syscall.Sync()
	base := perSecond(files, d)
	logf("row 9: baseline: %s files/s in %s", commas(base), d.Round(time.Millisecond))

	p, err := b.startStage(ctx, "row9")
	if err != nil {
		return row{}, err
	}
	defer p.stopOrWarn()
	pid := p.cmd.Process.Pid
	logf("row 9: service, local_copy of %s files", commas(files))
	stopWatch = watch("row 9: local_copy", pid)
	d, err = timed(func() error { return localCopy(ctx, http.DefaultClient, p.url, "million", "million-copy") })
	stopWatch()
	if err != nil {
		return row{}, err
	}
	peak, err := vmHWM(pid)
	if err != nil {
		return row{}, err
	}
	syscall.Sync()
	svc := perSecond(files, d)
	logf("row 9: service: %s files/s in %s, peak RSS %s", commas(svc), d.Round(time.Millisecond), mib(peak))
	logf("row 9: removing both copies")
	for _, dir := range []string{cpTarget, b.staged("million-copy")} {
		if err := testenv.RemoveTree(dir, 4); err != nil {
			return row{}, err
		}
	}
	syscall.Sync()
	return row{n: 9, name: fmt.Sprintf("local_copy of a tree of %s × %d-byte files (%s folders, three levels) vs `cp -r` (one run each, `cp` first), with the stage process's peak RSS",
		commas(files), treeFileSize, commas(float64(tree.Folders()))),
		service: fmt.Sprintf("%s files/s, peak RSS %s", commas(svc), mib(peak)), baseline: commas(base) + " files/s",
		ratio: svc / base, target: "≥ 1×, RSS ≤ 64 MiB", met: svc/base >= 1 && peak <= 64<<20}, nil
}

// treeTar is row 10: the tree downloaded as one tar (direct_download of the
// folder) vs `tar -cf -` of it into a pipe, each read through the same tar
// reader counting entries, in files/s, with the stage process's peak RSS.
func (b *bench) treeTar(ctx context.Context) (row, error) {
	svc, base, peak, tree, err := b.tarDownloads(ctx, 10, 1)
	if err != nil {
		return row{}, err
	}
	return row{n: 10, name: fmt.Sprintf("the same tree downloaded as a tar (direct_download of the folder) vs `tar -cf -` into a pipe, both read by Go's tar reader (one run each, `tar` first), with the stage process's peak RSS (%s folders, %s files)",
		commas(float64(tree.Folders())), commas(float64(tree.Files))),
		service: fmt.Sprintf("%s files/s, peak RSS %s", commas(svc), mib(peak)), baseline: commas(base) + " files/s",
		ratio: svc / base, target: "RSS ≤ 64 MiB", met: peak <= 64<<20}, nil
}

// manyTar is row 11: row 10 with 16 downloads at once vs 16 tar processes
// at once, in files/s over all of them.
func (b *bench) manyTar(ctx context.Context) (row, error) {
	svc, base, peak, tree, err := b.tarDownloads(ctx, 11, treeConcurrency)
	if err != nil {
		return row{}, err
	}
	return row{n: 11, name: fmt.Sprintf("%d downloads of the same tree as tars at once vs %d `tar -cf -` processes at once, files/s over all of them (one run each, `tar` first), with the stage process's peak RSS (%s files each)",
		treeConcurrency, treeConcurrency, commas(float64(tree.Files))),
		service: fmt.Sprintf("%s files/s, peak RSS %s", commas(svc), mib(peak)), baseline: commas(base) + " files/s",
		ratio: svc / base, target: "RSS ≤ 128 MiB", met: peak <= 128<<20}, nil
}

// tarDownloads measures n tar streams of the tree at once, by tar
// processes and then by a fresh stage process, and returns files/s over
// all streams for each and the stage process's peak RSS.
func (b *bench) tarDownloads(ctx context.Context, rowN, n int) (svc, base float64, peak int64, tree testenv.Tree, err error) {
	tree, err = b.manyTree()
	if err != nil {
		return
	}
	all := float64(n * tree.Files)
	streams := func(what string, pid int, open func() (io.ReadCloser, func() error, error)) (float64, error) {
		logf("row %d: %s, %d stream(s) of %s files", rowN, what, n, commas(float64(tree.Files)))
		stopWatch := watch(fmt.Sprintf("row %d: %s", rowN, what), pid)
		defer stopWatch()
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, wait, err := open()
				if err != nil {
					errs[i] = err
					return
				}
				files, err := countTar(r)
				io.Copy(io.Discard, r) // the end-of-archive padding
				r.Close()
				errs[i] = errors.Join(err, wait())
				if errs[i] == nil && files != tree.Files {
					errs[i] = fmt.Errorf("%s: %d files in the tar, want %d", what, files, tree.Files)
				}
			}()
		}
		wg.Wait()
		d := time.Since(start)
		if err := errors.Join(errs...); err != nil {
			return 0, err
		}
		v := perSecond(all, d)
		logf("row %d: %s: %s files/s in %s", rowN, what, commas(v), d.Round(time.Millisecond))
		return v, nil
	}

	base, err = streams("tar -cf -", 0, func() (io.ReadCloser, func() error, error) {
		cmd := exec.CommandContext(ctx, "tar", "-C", b.src, "-cf", "-", "million")
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, nil, err
		}
		return io.NopCloser(out), cmd.Wait, nil
	})
	if err != nil {
		return
	}

	p, err := b.startStage(ctx, fmt.Sprintf("row%d", rowN))
	if err != nil {
		return
	}
	defer p.stopOrWarn()
	pid := p.cmd.Process.Pid
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = n
	defer t.CloseIdleConnections()
	client := &http.Client{Transport: t}
	u := p.url + "/stage_data?method=direct_download&username=" + user + "&local_path_on_storage=" + url.QueryEscape("million")
	svc, err = streams("direct_download", pid, func() (io.ReadCloser, func() error, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, fmt.Errorf("direct_download of the tree: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 2000))
			resp.Body.Close()
			return nil, nil, fmt.Errorf("direct_download of the tree: %s: %s", resp.Status, body)
		}
		return resp.Body, func() error { return nil }, nil
	})
	if err != nil {
		return
	}
	peak, err = vmHWM(pid)
	logf("row %d: peak RSS of the stage process %s", rowN, mib(peak))
	return
}

// countTar reads a tar stream to its end and returns how many regular
// files it held.
func countTar(r io.Reader) (int, error) {
	tr := tar.NewReader(r)
	files := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return files, fmt.Errorf("tar stream, after %d files: %w", files, err)
		}
		if h.Typeflag == tar.TypeReg {
			files++
		}
	}
}
