package reliability

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// TestMillionFileTree stages a tree of 20,000 / 1,000,000 small files over
// three levels of folders: by local_copy, then as one tar download, then as
// 16 tar downloads at once, each phase on a fresh stage process so its peak
// RSS (VmHWM) is that phase's. The copy is complete and right, the tar
// holds every file with its content, and the peak RSS stays within 64 MiB
// for the copy and for one download and within 128 MiB for 16 downloads:
// memory does not grow with the tree.
//
// Each of the 16 downloads is read for its first eighth (2,500 / 125,000
// files, each checked) and then closed: 16 whole downloads of a million
// files are 16 million files, a quarter of an hour on 2 cores. The single
// download, read to its end, shows that memory stays flat along a whole
// walk; the 16 show how it adds up over concurrent walks, whose queues fill
// within their first files. The downloads closed early must end their
// operations.
func TestMillionFileTree(t *testing.T) {
	files := size(20_000, 1_000_000)
	const fileSize, concurrent = 100, 16
	concurrentRead := files / 8 // files read of each of the 16
	const oneBound, manyBound = 64 << 20, 128 << 20
	longest := size(5*time.Minute, 40*time.Minute) // any one phase
	tree := testenv.NewTree(files, fileSize)
	s := newSite(t, "")
	t.Cleanup(func() {
		start := time.Now()
		must(t, testenv.RemoveTree(filepath.Join(s.Source, "million"), 4))
		t.Logf("tree removed in %.1f s", time.Since(start).Seconds())
	})

	began := time.Now()
	step := max(files/10, 1)
	must(t, tree.Write(filepath.Join(s.Source, "million"), 4, func(done int) {
		if done%step < testenv.TreeFilesPerDir && done < files {
			t.Logf("tree: %d of %d files written", done, files)
		}
	}))
	built := time.Since(began)
	t.Logf("tree of %d files in %d folders built in %.1f s", files, tree.Folders(), built.Seconds())
	longClient := &http.Client{Timeout: longest}

	// phase runs f on a fresh stage process and returns that process's
	// peak RSS, logging its resident size every 30 s meanwhile.
	phase := func(name string, f func(p *testenv.Process)) int64 {
		t.Helper()
		p := s.start(t, nil)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for start := time.Now(); ; {
				select {
				case <-stop:
					return
				case <-time.After(30 * time.Second):
				}
				peak, _ := vmHWM(p.Pid())
				t.Logf("%s: %s so far, peak RSS %.1f MiB", name, time.Since(start).Round(time.Second), float64(peak)/(1<<20))
			}
		}()
		f(p)
		close(stop)
		wg.Wait()
		peak, err := vmHWM(p.Pid())
		must(t, err)
		p.Kill()
		return peak
	}
	checkPeak := func(what string, peak, bound int64) {
		if peak > bound {
			t.Errorf("%s: the stage function's peak RSS was %.1f MiB, bound %d MiB", what, float64(peak)/(1<<20), bound>>20)
		}
	}

	// 1. local_copy.
	var copyTook time.Duration
	copyPeak := phase("local_copy", func(p *testenv.Process) {
		a := call(longClient, http.MethodPost, stageURL(p.URL, "local_copy", "tree"), stageBody("million", "copy"))
		copyTook = a.Took
		if a.Status != 200 || a.str("status") != "success" {
			t.Errorf("local_copy of the tree after %s: %v", a.Took.Round(time.Millisecond), clip(a.String(), 300))
		}
	})
	checkPeak("local_copy", copyPeak, oneBound)
	copyRoot := s.userPath("tree", "copy")
	checkStart := time.Now()
	copied, folders, checked, bad := 0, 0, 0, []string{}
	stride := max(1, files/10_000)
	filepath.WalkDir(copyRoot, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			bad = append(bad, err.Error())
		case p == copyRoot:
		case d.IsDir():
			folders++
		case d.Type().IsRegular():
			if copied%stride == 0 {
				rel, _ := filepath.Rel(copyRoot, p)
				checked++
				if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, tree.Content(rel)) {
					bad = append(bad, fmt.Sprintf("%s holds %q (%v)", rel, clip(string(b), 40), err))
				}
			}
			copied++
		default:
			bad = append(bad, fmt.Sprintf("%s is a %v", p, d.Type()))
		}
		return nil
	})
	if copied != files || folders != tree.Folders() || len(bad) > 0 {
		t.Errorf("the copy holds %d files and %d folders, want %d and %d; %d wrong, e.g. %v",
			copied, folders, files, tree.Folders(), len(bad), bad[:min(len(bad), 3)])
	}
	t.Logf("copy checked in %.1f s", time.Since(checkStart).Seconds())
	removeStart := time.Now()
	must(t, testenv.RemoveTree(copyRoot, 4))
	t.Logf("copy removed in %.1f s", time.Since(removeStart).Seconds())

	// 2. One tar download, then 3. many at once.
	var oneTook time.Duration
	var oneGot tarCount
	onePeak := phase("one tar download", func(p *testenv.Process) {
		start := time.Now()
		oneGot = fetchTar(longClient, p.URL, tree, tree.Files)
		oneTook = time.Since(start)
	})
	if err := oneGot.check(tree, tree.Files); err != nil {
		t.Errorf("the tar download: %v", err)
	}
	checkPeak("one tar download", onePeak, oneBound)

	var manyTook time.Duration
	many := make([]tarCount, concurrent)
	manyPeak := phase(fmt.Sprintf("%d tar downloads at once", concurrent), func(p *testenv.Process) {
		start := time.Now()
		var wg sync.WaitGroup
		for i := range many {
			wg.Add(1)
			go func() { defer wg.Done(); many[i] = fetchTar(longClient, p.URL, tree, concurrentRead) }()
		}
		wg.Wait()
		manyTook = time.Since(start)
		// Downloads closed early end their operations (as failed: the
		// client went away) while their process still runs.
		testenv.WaitFor(t, 30*time.Second, "the operations of the downloads to end", func() bool {
			for _, op := range s.operations(t) {
				if op.Status == staging.StatusRunning || op.Status == staging.StatusPending {
					return false
				}
			}
			return true
		})
	})
	for i, got := range many {
		if err := got.check(tree, concurrentRead); err != nil {
			t.Errorf("tar download %d of %d at once: %v", i+1, concurrent, err)
		}
	}
	checkPeak(fmt.Sprintf("%d tar downloads at once", concurrent), manyPeak, manyBound)

	// Every operation finished: a success, or a download closed early.
	closedEarly := 0
	for _, op := range s.operations(t) {
		switch {
		case op.Status == staging.StatusSuccess:
		case op.Status == staging.StatusFailed && op.Method == "direct_download" && concurrentRead < tree.Files:
			closedEarly++
		default:
			t.Errorf("operation %s (%s) is %s: %s", op.ID, op.Method, op.Status, op.ErrorReason)
		}
	}
	if concurrentRead < tree.Files && closedEarly != concurrent {
		t.Errorf("%d download operations failed, want the %d closed early", closedEarly, concurrent)
	}
	readWhat := "each read to its end"
	if concurrentRead < tree.Files {
		readWhat = fmt.Sprintf("each read for its first %d files, then closed (their %d operations ended as failed)", concurrentRead, closedEarly)
	}
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	record(t,
		fmt.Sprintf("a tree of %d files of %d bytes in %d folders over three levels, written in %.1f s", files, fileSize, tree.Folders(), built.Seconds()),
		fmt.Sprintf("local_copy in %.1f s (%.0f files/s): %d files and %d folders copied, %d contents checked, %d wrong; stage function's peak RSS **%s** (bound %s)",
			copyTook.Seconds(), float64(files)/copyTook.Seconds(), copied, folders, checked, len(bad), mib(copyPeak), mib(oneBound)),
		fmt.Sprintf("one tar download (direct_download of the folder) in %.1f s: %d files with their content, %d folders, %s; peak RSS **%s** (bound %s)",
			oneTook.Seconds(), oneGot.files, oneGot.dirs, mib(oneGot.bytes), mib(onePeak), mib(oneBound)),
		fmt.Sprintf("%d tar downloads at once, %s, in %.1f s (%.0f files/s in all), every file checked; peak RSS **%s** (bound %s)",
			concurrent, readWhat, manyTook.Seconds(), float64(concurrent*concurrentRead)/manyTook.Seconds(), mib(manyPeak), mib(manyBound)))
}

// tarCount is what one tar download of a tree held.
type tarCount struct {
	files, dirs int
	bytes       int64
	wrong       []string // entries that are not what the tree holds
	err         error    // no answer, a refusal, or a broken stream
}

// check says what is wrong with a download read for its first read files
// (all of them: the tree's every file and folder).
func (c tarCount) check(tree testenv.Tree, read int) error {
	switch {
	case c.err != nil:
		return c.err
	case len(c.wrong) > 0:
		return fmt.Errorf("%d wrong entries, e.g. %v", len(c.wrong), c.wrong[:min(len(c.wrong), 3)])
	case c.files != read:
		return fmt.Errorf("%d files, want %d", c.files, read)
	case read == tree.Files && c.dirs < tree.Folders():
		return fmt.Errorf("%d folders, want %d", c.dirs, tree.Folders())
	}
	return nil
}

// fetchTar downloads the folder "million" as a tar, checks every entry
// against tree, and hangs up after read files if that is fewer than all.
func fetchTar(c *http.Client, base string, tree testenv.Tree, read int) tarCount {
	var out tarCount
	resp, err := c.Get(stageURL(base, "direct_download", "tree") + "&local_path_on_storage=million")
	if err != nil {
		out.err = err
		return out
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-tar" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		out.err = fmt.Errorf("answered %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		return out
	}
	counted := &countReader{r: resp.Body}
	tr := tar.NewReader(counted)
	for out.files < read || read == tree.Files {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			out.err = fmt.Errorf("after %d files: %w", out.files, err)
			break
		}
		rel, ok := strings.CutPrefix(strings.TrimSuffix(h.Name, "/"), "million")
		rel = strings.TrimPrefix(rel, "/")
		switch {
		case !ok:
			out.wrong = append(out.wrong, h.Name+" outside the folder")
		case h.Typeflag == tar.TypeDir:
			if rel != "" {
				out.dirs++
			}
		case h.Typeflag == tar.TypeReg:
			out.files++
			b, err := io.ReadAll(tr)
			if err != nil {
				out.err = fmt.Errorf("after %d files: %w", out.files, err)
				return out
			}
			if !bytes.Equal(b, tree.Content(rel)) {
				out.wrong = append(out.wrong, fmt.Sprintf("%s holds %q", h.Name, clip(string(b), 40)))
			}
		default:
			out.wrong = append(out.wrong, fmt.Sprintf("%s of type %c", h.Name, h.Typeflag))
		}
	}
	out.bytes = counted.n
	return out
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
