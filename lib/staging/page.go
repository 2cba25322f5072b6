package staging

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Listings of operations are read page by page, newest first, in the
// order (created_at, id) descending. A page ends after Limit operations or
// once its answer would grow past a byte bound, and says where the next
// one starts: a cursor holding the position of its last operation, which
// the store continues after through an index (keyset pagination), however
// deep the page.

// Cursor is a position in the newest-first order of operations: the
// creation time and id of the last operation a page held. The zero Cursor
// is the start of the listing.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// IsZero reports whether c is the start of the listing.
func (c Cursor) IsZero() bool { return c.ID == "" && c.CreatedAt.IsZero() }

// cursorOf is the position of op.
func cursorOf(op *Operation) Cursor {
	return Cursor{CreatedAt: op.CreatedAt.UTC().Truncate(time.Microsecond), ID: op.ID}
}

// Encode returns c as an opaque token for a URL.
func (c Cursor) Encode() string {
	raw := strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + "." + c.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// maxCursor bounds an encoded cursor; ids are UUIDs.
const maxCursor = 128

// lastCursorTime is the last time a cursor may hold: MySQL's DATETIME's.
var lastCursorTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC).UnixMicro()

// DecodeCursor reads a token made by Encode; anything else is Invalid.
func DecodeCursor(token string) (Cursor, error) {
	bad := Errorf(Invalid, "cursor is not one this service gave out")
	if token == "" || len(token) > maxCursor {
		return Cursor{}, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return Cursor{}, bad
	}
	micros, id, ok := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(micros, 10, 64)
	// Past the year 9999 no database holds the time (MySQL refuses it).
	if !ok || err != nil || n < 0 || n > lastCursorTime || id == "" || !validID(id) {
		return Cursor{}, bad
	}
	return Cursor{CreatedAt: time.UnixMicro(n).UTC(), ID: id}, nil
}

// validID accepts what NewID makes (and the ids of earlier records:
// letters, digits and dashes).
func validID(id string) bool {
	if len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r == '-' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')) {
			return false
		}
	}
	return true
}

// MaxPageBytes bounds the JSON of one page of operations. A record is at
// most a few KiB (paths of 4096 bytes, texts of MaxText), so a page of the
// most operations it may hold stays far below a client's or the function's
// memory, however large the store.
const MaxPageBytes = 256 << 10

// maxListedPath bounds a path as a listing shows it: the limit a request's
// path has had all along. Records written before that limit may hold
// longer ones.
const maxListedPath = 4096

// Page is one page of a listing of operations.
type Page struct {
	Operations []Operation
	// Next is where the next page starts; nil after the last page.
	Next *Cursor
}

// pageChunk is how many operations OperationsPage reads from the store at
// a time: a page ends at its byte bound long before a thousand operations
// of the largest kind, so it reads no more than it may answer, and a few
// more.
const pageChunk = 128

// OperationsPage lists one page of the operations matching f that caller
// may read (as Operations does), starting after f.After: at most f.Limit
// operations, and no more than maxBytes of JSON (MaxPageBytes when 0),
// at least one operation however large.
func (s *Service) OperationsPage(ctx context.Context, caller Caller, f Filter, maxBytes int) (*Page, error) {
	if maxBytes <= 0 {
		maxBytes = MaxPageBytes
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	page := &Page{Operations: []Operation{}}
	size := 2 // []
	for {
		need := limit - len(page.Operations)
		f.Limit = min(need+1, pageChunk) // one more tells whether a next page exists
		ops, err := s.Operations(ctx, caller, f)
		if err != nil {
			return nil, err
		}
		for i := range ops {
			op := bounded(ops[i])
			b, err := json.Marshal(op)
			if err != nil {
				return nil, Wrap(Internal, "Cannot list operations", err)
			}
			full := len(page.Operations) == limit || (len(page.Operations) > 0 && size+len(b)+1 > maxBytes)
			if full {
				next := cursorOf(&page.Operations[len(page.Operations)-1])
				page.Next = &next
				return page, nil
			}
			size += len(b) + 1
			page.Operations = append(page.Operations, op)
		}
		if len(ops) < f.Limit {
			return page, nil // the listing ends here
		}
		f.After = cursorOf(&ops[len(ops)-1])
	}
}

// bounded is op as a listing shows it: texts cut to MaxText and paths to
// maxListedPath, so one record written before those limits cannot make a
// page large.
func bounded(op Operation) Operation {
	op.Message, op.ErrorReason = truncate(op.Message), truncate(op.ErrorReason)
	op.LocalPathOnStorage, op.RelativePath = clipText(op.LocalPathOnStorage, maxListedPath), clipText(op.RelativePath, maxListedPath)
	op.DID = clipText(op.DID, MaxDIDBytes)
	return op
}

// clipText cuts s to at most n bytes on a rune boundary, marking the cut.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
