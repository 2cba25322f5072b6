package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// download is GET /stage_data?method=direct_download&username=&local_path_on_storage=,
// so a plain link, curl -O or wget works. A GET only fetches: the
// service refuses a method that does not stream.
func (a *api) download(w http.ResponseWriter, r *http.Request) {
	a.fetch(w, r, r.URL.Query().Get("jupyter_token"))
}

// maxFormBody bounds a download form's body: it holds one token.
const maxFormBody = 64 << 10

// downloadForm is the download link posted as a form
// (application/x-www-form-urlencoded) whose body carries the caller's token
// as access_token (RFC 6750, section 2.2): how the web page downloads
// with a token. A browser's download is a navigation, which cannot carry an
// Authorization header, and a token in the link's URL would end up in
// logs and in the browser's history; posted into a frame, the file still
// streams straight to disk. The query is the link's; like the link, it
// only fetches.
func (a *api) downloadForm(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpx.Error(w, staging.Errorf(staging.TooLarge, "Request body is larger than %d bytes", maxFormBody))
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			httpx.Error(w, staging.Wrap(staging.ClientTimeout, "Request body not received in time", err))
			return
		}
		httpx.Error(w, staging.Wrap(staging.Invalid, "Malformed form body", err))
		return
	}
	a.fetch(w, r, r.PostForm.Get("access_token"))
}

// isForm says whether r's body is a form: form-encoded, and not a JSON
// object sent under that type, as `curl -d '{...}'` sends one unless told
// otherwise. A form's body starts with a field name, never with '{'.
func isForm(r *http.Request) bool {
	t, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if t != "application/x-www-form-urlencoded" {
		return false
	}
	body := bufio.NewReaderSize(r.Body, 64)
	r.Body = struct {
		io.Reader
		io.Closer
	}{body, r.Body}
	start, _ := body.Peek(64) // less at the body's end
	start = bytes.TrimLeft(start, " \t\r\n")
	return len(start) == 0 || start[0] != '{'
}

// fetch streams what the query names to the caller of r, who is
// established by r's Authorization header, else by token.
func (a *api) fetch(w http.ResponseWriter, r *http.Request, token string) {
	q := r.URL.Query()
	req := staging.Request{Method: q.Get("method"), Username: q.Get("username"),
		Source: q.Get("local_path_on_storage"), DID: q.Get("did")}
	caller, err := a.caller(r, token)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	out, err := a.svc.Handle(r.Context(), caller, req, staging.Options{Stream: true, Fetch: true})
	if err != nil {
		httpx.Error(w, err)
		return
	}
	serveDownload(w, r, out)
}

// serveDownload streams a file (with Range support) or a directory as tar,
// counting what is sent into the operation's progress, and finishes the
// operation when the stream ends. Memory stays flat: files go out with
// sendfile, tar streams are written as they are read.
func serveDownload(w http.ResponseWriter, r *http.Request, out *staging.Outcome) {
	d := out.Download
	h := w.Header()
	h.Set("Content-Disposition", attachment(d.Name))
	h.Set("X-Operation-Id", out.Operation.ID)
	cw := &countingWriter{ResponseWriter: w, out: out, rc: http.NewResponseController(w), most: -1}
	defer cw.rc.SetWriteDeadline(time.Time{}) // the connection may serve more requests
	if d.File != nil {
		h.Set("Content-Type", "application/octet-stream")
		cw.most = d.Size // a multi-range answer's part headers are not the file's bytes
		http.ServeContent(cw, r, d.Name, d.ModTime, d.File)
		d.File.Close() // before Done, which gives back the files the operation held
		if cw.status >= 400 {
			// A Range outside the file, or a failed precondition: nothing
			// was sent, and the operation failed.
			detail := http.StatusText(cw.status)
			if cw.status == http.StatusRequestedRangeNotSatisfiable {
				detail = fmt.Sprintf("Range not satisfiable: the file has %d bytes", d.Size)
			}
			h.Del("Content-Disposition")
			httpx.JSON(w, cw.status, httpx.Detail{Detail: detail})
			out.Done(0, staging.Errorf(staging.Invalid, "%s", detail))
			return
		}
		want, _ := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
		var err error
		if r.Method != http.MethodHead && cw.n < want {
			err = errors.New("client went away before the end")
		}
		out.Done(cw.counted, err)
		return
	}
	h.Set("Content-Type", "application/x-tar")
	h.Set("Accept-Ranges", "none")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		out.Done(0, nil)
		return
	}
	if err := d.WriteTo(r.Context(), cw); err != nil {
		out.Done(cw.counted, err)
		// The status and part of the tar are out. Ending the response as
		// usual would hand over a cut archive as a whole one: cut between
		// two members, a tar reads as complete. Aborting it leaves the
		// chunked body without its end, which every client reports.
		panic(http.ErrAbortHandler)
	}
	out.Done(cw.counted, nil)
}

// attachment is the Content-Disposition of a download named name. A name
// that is not printable ASCII goes in filename* (RFC 5987, UTF-8,
// percent-encoded), after a plain filename with '_' for what it cannot hold
// (RFC 6266, section 4.3): browsers and wget take filename*, and clients
// that read filename only (curl -J) still save under the name rather than
// under the URL's last segment.
func attachment(name string) string {
	full := mime.FormatMediaType("attachment", map[string]string{"filename": name})
	plain := strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '_'
		}
		return r
	}, name)
	if plain == name {
		return full
	}
	return mime.FormatMediaType("attachment", map[string]string{"filename": plain}) + strings.TrimPrefix(full, "attachment")
}

// progressChunk is how much of a file goes out in one sendfile call
// before the bytes sent are counted into the operation's progress.
const progressChunk = 2 << 20

// stallTimeout is how long a download waits for a client that reads
// nothing: then its connection is closed and its operation fails, giving
// back its place in MAX_INFLIGHT.
var stallTimeout = time.Minute

// countingWriter counts bytes sent into the outcome's progress and keeps
// io.ReaderFrom, so sendfile still applies. Each write must go out within
// stallTimeout. An error status (from http.ServeContent) is kept, not
// written, with its plain-text body: serveDownload answers it in JSON.
type countingWriter struct {
	http.ResponseWriter
	out     *staging.Outcome
	rc      *http.ResponseController
	n       int64     // bytes sent
	counted int64     // of them, counted as progress
	most    int64     // at most this much progress; < 0: no bound
	until   time.Time // the write deadline set last
	status  int
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	if code < 400 {
		c.ResponseWriter.WriteHeader(code)
	}
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status >= 400 {
		return len(p), nil // the error's text, answered in JSON instead
	}
	c.extend()
	n, err := c.ResponseWriter.Write(p)
	c.count(int64(n))
	return n, err
}

// extend moves the write deadline to stallTimeout from now, at most once
// a second: a tar of small files writes often.
func (c *countingWriter) extend() {
	now := time.Now()
	if c.until.Sub(now) > stallTimeout-time.Second {
		return
	}
	c.until = now.Add(stallTimeout)
	c.rc.SetWriteDeadline(c.until) // a writer without deadlines has none to set
}

// count adds n bytes sent to the total and to the operation's progress,
// which stops at most bytes (when most >= 0).
func (c *countingWriter) count(n int64) {
	c.n += n
	if c.most >= 0 {
		n = min(n, c.most-c.counted)
	}
	c.counted += n
	c.out.Add(n)
}

// ReadFrom sends r in chunks, so progress shows while a large file goes
// out; each chunk is a LimitedReader over the file itself, which the
// connection still sends with sendfile.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.ResponseWriter.(io.ReaderFrom)
	if !ok { // a wrapper without sendfile: copy through Write
		return io.Copy(struct{ io.Writer }{c}, r)
	}
	lr, limited := r.(*io.LimitedReader)
	if !limited {
		lr = &io.LimitedReader{R: r, N: 1<<63 - 1}
	}
	var total int64
	for lr.N > 0 {
		c.extend()
		n, err := rf.ReadFrom(&io.LimitedReader{R: lr.R, N: min(progressChunk, lr.N)})
		lr.N -= n
		total += n
		c.count(n)
		if err != nil {
			return total, err
		}
		if n == 0 {
			break // the end of r
		}
	}
	return total, nil
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
