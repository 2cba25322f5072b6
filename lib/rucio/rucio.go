// Package rucio speaks the parts of Rucio the service needs: data
// identifiers (DIDs), where a deterministic RSE keeps a DID's replica, and
// the transfer-done messages Rucio's hermes daemon emits when a replica has
// arrived. Rucio itself cannot run here; these follow its documented
// behaviour and message format.
package rucio

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/adler32"
	"io"
	"path"
	"strconv"
	"strings"
	"unicode"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// DID is a Rucio data identifier, scope:name.
type DID struct {
	Scope, Name string
}

func (d DID) String() string { return d.Scope + ":" + d.Name }

// ParseDID reads "scope:name". As in Rucio's generic schema
// (lib/rucio/common/schema/generic.py, SCOPE and NAME), a scope has no '/'
// and a name may have some ("data/run1/vis.ms"); since both become path
// elements, none of their elements may be "." or "..", and a name may not
// end with '/' (no file is there).
func ParseDID(s string) (DID, error) {
	scope, name, ok := strings.Cut(s, ":")
	d := DID{Scope: scope, Name: name}
	if !ok || strings.Contains(scope, "/") || strings.HasSuffix(name, "/") || !validPart(scope, 25) || !validPart(name, 250) {
		return DID{}, staging.Errorf(staging.Invalid,
			"Invalid DID %q: want <scope>:<name>, a scope without '/', a name not ending with '/', no '.' or '..' between slashes, no spaces or control characters", s)
	}
	return d, nil
}

// validPart also refuses spaces and control characters, which Rucio's
// names never have: MySQL's PAD SPACE collations compare "name " equal to
// "name", so a transfer of one completed the requests waiting for the other.
func validPart(s string, max int) bool {
	if s == "" || len(s) > max || strings.ContainsAny(s, "\\\x00:") ||
		strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return false
	}
	for _, e := range strings.Split(s, "/") {
		if e == "." || e == ".." {
			return false
		}
	}
	return true
}

// DeterministicPath is where a deterministic RSE keeps the DID's replica,
// relative to the RSE root: Rucio's default "hash" algorithm,
// <scope>/<md5[0:2]>/<md5[2:4]>/<name> with md5 of "scope:name", where a
// user or group scope's dots become folders (user.jdoe -> user/jdoe).
func DeterministicPath(d DID) string {
	sum := md5.Sum([]byte(d.Scope + ":" + d.Name))
	h := hex.EncodeToString(sum[:])
	scope := d.Scope
	if strings.HasPrefix(scope, "user") || strings.HasPrefix(scope, "group") {
		scope = strings.ReplaceAll(scope, ".", "/")
	}
	return path.Join(scope, h[0:2], h[2:4], d.Name)
}

// TransferDone is the payload of Rucio's transfer-done message, the fields
// the service uses, as hermes sends them (any may be null).
type TransferDone struct {
	Scope         string  `json:"scope"`
	Name          string  `json:"name"`
	DstRSE        string  `json:"dst-rse"`
	DstURL        string  `json:"dst-url"`
	Bytes         *Number `json:"bytes"`
	FileSize      *Number `json:"file-size"`
	ChecksumAdler *string `json:"checksum-adler"`
	ChecksumMD5   *string `json:"checksum-md5"`
	Account       *string `json:"account"`
	RequestID     *string `json:"request-id"`
	Activity      *string `json:"activity"`
	TransferID    *string `json:"transfer-id"`
}

// Number accepts a JSON number, which is what Rucio sends (bytes and
// file-size are the request's BigInteger bytes column in
// add_monitor_message, lib/rucio/core/request.py), or a numeric string, as
// a bridge that re-encodes the message may write it.
type Number int64

func (n *Number) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" || s == "" {
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not a byte count: %s", b)
	}
	*n = Number(v)
	return nil
}

// ParseTransferDone reads the data of an io.rucio.transfer-done event:
// either Rucio's whole message {"event_type", "payload", "created_at"} or
// just its payload.
func ParseTransferDone(data []byte) (*TransferDone, error) {
	var msg struct {
		EventType string          `json:"event_type"`
		Payload   json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(data, &msg); err != nil {
		return nil, staging.Wrap(staging.Invalid, "Malformed transfer-done data: want a JSON object", err)
	}
	body := data
	if len(msg.Payload) > 0 && string(msg.Payload) != "null" {
		if msg.EventType != "" && msg.EventType != "transfer-done" {
			return nil, staging.Errorf(staging.Invalid, "Unexpected Rucio event_type %q: want transfer-done", msg.EventType)
		}
		body = msg.Payload
	}
	var td TransferDone
	if err := json.Unmarshal(body, &td); err != nil {
		return nil, staging.Wrap(staging.Invalid, "Malformed transfer-done payload: want Rucio's fields (scope, name, dst-rse, dst-url, bytes, checksums) with their types", err)
	}
	if td.Scope == "" || td.Name == "" || td.DstRSE == "" {
		return nil, staging.Errorf(staging.Invalid, "transfer-done payload needs scope, name and dst-rse")
	}
	if _, err := ParseDID(td.DID().String()); err != nil {
		return nil, err
	}
	return &td, nil
}

// DID is the transferred file's identifier.
func (t *TransferDone) DID() DID { return DID{Scope: t.Scope, Name: t.Name} }

// Size is the transferred file's size, or -1 when the message has none.
func (t *TransferDone) Size() int64 {
	switch {
	case t.Bytes != nil:
		return int64(*t.Bytes)
	case t.FileSize != nil:
		return int64(*t.FileSize)
	}
	return -1
}

// Verify checks a replica's size and checksum against the message: adler32
// as Rucio reports it (8 hex digits), else MD5. It reads r to the end.
func (t *TransferDone) Verify(r io.Reader, size int64) error {
	if want := t.Size(); want >= 0 && want != size {
		return staging.Errorf(staging.Conflict, "Replica of %s has %d bytes, the transfer reported %d", t.DID(), size, want)
	}
	switch {
	case t.ChecksumAdler != nil && *t.ChecksumAdler != "":
		h := adler32.New()
		if _, err := io.Copy(h, r); err != nil {
			return staging.Wrap(staging.Internal, "Cannot read the replica of "+t.DID().String(), err)
		}
		got := fmt.Sprintf("%08x", h.Sum32())
		if want, err := strconv.ParseUint(*t.ChecksumAdler, 16, 32); err != nil || uint32(want) != h.Sum32() {
			return staging.Errorf(staging.Conflict, "Replica of %s has adler32 %s, the transfer reported %s", t.DID(), got, *t.ChecksumAdler)
		}
	case t.ChecksumMD5 != nil && *t.ChecksumMD5 != "":
		h := md5.New()
		if _, err := io.Copy(h, r); err != nil {
			return staging.Wrap(staging.Internal, "Cannot read the replica of "+t.DID().String(), err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, *t.ChecksumMD5) {
			return staging.Errorf(staging.Conflict, "Replica of %s has md5 %s, the transfer reported %s", t.DID(), got, *t.ChecksumMD5)
		}
	}
	return nil
}
