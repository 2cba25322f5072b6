package main

import (
	"archive/tar"
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// A folder's tar that fails part-way (a file removed after the download
// began) ends the response without its last chunk, so the client sees a
// broken transfer rather than a well-formed stream holding a cut archive
// (which a tar reader takes for whole when the cut falls between two
// members); its operation fails.
func TestFailedTarIsNotAWholeResponse(t *testing.T) {
	fn, srv, source := inProcess(t)
	tree := filepath.Join(source, "tree")
	must(t, os.MkdirAll(tree, 0o755))
	f, err := os.Create(filepath.Join(tree, "a.bin"))
	must(t, err)
	must(t, f.Truncate(64<<20)) // more than the socket buffers hold: the tar waits on it
	must(t, f.Close())
	must(t, os.WriteFile(filepath.Join(tree, "z.txt"), []byte("last"), 0o644))

	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	must(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /stage_data?method=direct_download&username=alice&local_path_on_storage=tree HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
	must(t, err)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-tar" {
		t.Fatalf("status %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	must(t, os.Remove(filepath.Join(tree, "z.txt"))) // the tar has not reached it: a.bin comes first
	must(t, conn.SetReadDeadline(time.Now().Add(time.Minute)))

	tr := tar.NewReader(resp.Body)
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			if err == io.EOF {
				t.Fatalf("the archive read as complete (%v): a failed tar must not end as a whole response", names)
			}
			break // the transfer broke: what a client must see
		}
		names = append(names, h.Name)
		if _, err := io.Copy(io.Discard, tr); err != nil {
			break
		}
	}
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatal("the response body ended cleanly after a failed tar")
	}
	op := waitFailed(t, fn, resp.Header.Get("X-Operation-Id"), 10*time.Second)
	if op.Status != staging.StatusFailed {
		t.Fatalf("%+v", op)
	}
}
