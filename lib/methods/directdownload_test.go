package methods

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

func TestDirectDownloadFile(t *testing.T) {
	fx := newFixture(t)
	content := strings.Repeat("direct download ", 10_000)
	fx.file(t, "data/obs.fits", content)
	m := DirectDownload{Storage: fx.st}
	req := staging.Request{Method: "direct_download", Username: "alice", Source: "data/obs.fits"}
	plan, err := m.Prepare(context.Background(), &req)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Lock != "" {
		t.Errorf("Lock = %q, want none: a download writes nothing", plan.Lock)
	}
	job := newJob(&req)
	res, err := plan.Run(context.Background(), job)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	d := res.Download
	if d == nil || d.File == nil || d.WriteTo != nil {
		t.Fatalf("Download = %+v, want a File", d)
	}
	defer d.File.Close()
	if d.Name != "obs.fits" || d.Size != int64(len(content)) || !d.ModTime.Equal(fileTime) {
		t.Errorf("Download = %q, %d bytes, %v; want obs.fits, %d, %v", d.Name, d.Size, d.ModTime, len(content), fileTime)
	}
	if total, _ := job.Counts(); total != int64(len(content)) {
		t.Errorf("job total = %d", total)
	}
	got, err := io.ReadAll(d.File)
	if err != nil || string(got) != content {
		t.Fatalf("read %d bytes (%v), want the file", len(got), err)
	}
	// Seekable, for Range requests.
	if _, err := d.File.Seek(7, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := io.ReadFull(d.File, buf); err != nil || string(buf) != content[7:15] {
		t.Errorf("after Seek(7): %q, %v", buf, err)
	}
	entries, _ := os.ReadDir(fx.target)
	if len(entries) != 0 {
		t.Errorf("a download wrote %d entries to the target storage", len(entries))
	}
}

func TestDirectDownloadDirectory(t *testing.T) {
	fx := newFixture(t)
	files := map[string]string{
		"a.txt":            "alpha",
		"big.bin":          strings.Repeat("0123456789", 30_000),
		"sub/b.txt":        "bravo",
		"sub/empty.txt":    "",
		"sub/deeper/c.txt": "charlie",
	}
	fx.tree(t, "obs/run1", files, "emptydir")
	must(t, os.Symlink("a.txt", filepath.Join(fx.source, "obs/run1/alias.txt")))
	must(t, os.Chtimes(filepath.Join(fx.source, "obs/run1"), dirTime, dirTime))
	files["alias.txt"] = "alpha"
	var total int64
	for _, c := range files {
		total += int64(len(c))
	}
	req := staging.Request{Method: "direct_download", Username: "alice", Source: "obs/run1/"}
	res, job, err := stage(context.Background(), t, DirectDownload{Storage: fx.st}, req)
	if err != nil {
		t.Fatal(err)
	}
	d := res.Download
	if d == nil || d.File != nil || d.WriteTo == nil {
		t.Fatalf("Download = %+v, want a WriteTo stream", d)
	}
	if d.Name != "run1.tar" || d.Size != -1 || !d.ModTime.Equal(dirTime) {
		t.Errorf("Download = %q, size %d, %v", d.Name, d.Size, d.ModTime)
	}
	// The tree is streamed as it is walked: its size is not known before.
	if jt, _ := job.Counts(); jt != 0 {
		t.Errorf("job total = %d, want 0 (unknown)", jt)
	}
	var buf bytes.Buffer
	if err := d.WriteTo(context.Background(), &buf); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}

	tr := tar.NewReader(&buf)
	gotFiles := map[string]string{}
	gotDirs := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the tar back: %v", err)
		}
		if !strings.HasPrefix(h.Name, "run1/") {
			t.Errorf("entry %q is not under run1/", h.Name)
		}
		switch h.Typeflag {
		// tar.Writer rounds times to the second unless a format is chosen.
		case tar.TypeDir:
			gotDirs[strings.TrimSuffix(h.Name, "/")] = true
			if !h.ModTime.Equal(dirTime.Round(time.Second)) {
				t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, dirTime.Round(time.Second))
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != h.Size {
				t.Errorf("%s: %d bytes, header says %d", h.Name, len(b), h.Size)
			}
			gotFiles[strings.TrimPrefix(h.Name, "run1/")] = string(b)
			if !h.ModTime.Equal(fileTime.Round(time.Second)) {
				t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, fileTime.Round(time.Second))
			}
		default:
			t.Errorf("%s: unexpected type %c", h.Name, h.Typeflag)
		}
	}
	if len(gotFiles) != len(files) {
		t.Errorf("tar holds %d files, want %d", len(gotFiles), len(files))
	}
	for name, content := range files {
		if got, ok := gotFiles[name]; !ok || got != content {
			t.Errorf("%s: in tar %v, content equal %v", name, ok, got == content)
		}
	}
	for _, dir := range []string{"run1", "run1/sub", "run1/sub/deeper", "run1/emptydir"} {
		if !gotDirs[dir] {
			t.Errorf("folder %s missing from the tar (have %v)", dir, gotDirs)
		}
	}
	if len(gotDirs) != 4 {
		t.Errorf("tar holds folders %v, want 4", gotDirs)
	}
}

func TestDirectDownloadRefused(t *testing.T) {
	fx := newFixture(t)
	fx.tree(t, "linked", map[string]string{"a": "a", "sub/b": "b"})
	must(t, os.Symlink("sub", filepath.Join(fx.source, "linked", "dirlink")))
	must(t, os.Symlink("../outside/secret.txt", filepath.Join(fx.source, "escape")))
	m := DirectDownload{Storage: fx.st}

	for _, tc := range []struct {
		source string
		status int
	}{
		{"missing", http.StatusBadRequest},
		{"escape", http.StatusForbidden},
		{"../outside/secret.txt", http.StatusForbidden},
		{filepath.Join(fx.outside, "secret.txt"), http.StatusForbidden},
	} {
		_, err := m.Prepare(context.Background(), &staging.Request{Method: "direct_download", Username: "alice", Source: tc.source})
		wantStatus(t, err, tc.status, "")
	}
	_, _, err := stage(context.Background(), t, m, staging.Request{Method: "direct_download", Username: "alice", Source: "linked"})
	wantStatus(t, err, http.StatusBadRequest, "Unsupported link to a directory in the source: linked/dirlink")

	// A stream cut by its context stops with the context's error.
	fx.tree(t, "plain", map[string]string{"a": "a", "b": "b"})
	res, _, err := stage(context.Background(), t, m, staging.Request{Method: "direct_download", Username: "alice", Source: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := res.Download.WriteTo(ctx, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("WriteTo with a cancelled context = %v, want context.Canceled", err)
	}
}
