package rucio

import (
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
)

// The expected paths were computed apart from this code, with Python's
// hashlib following Rucio's lfn2pfn "hash" algorithm.
func TestDeterministicPath(t *testing.T) {
	for _, c := range []struct{ did, want string }{
		{"skao:vis.ms", "skao/a4/e4/vis.ms"},
		{"user.jdoe:image.fits", "user/jdoe/88/bc/image.fits"},
		{"group.sdc:catalogue.csv", "group/sdc/14/a3/catalogue.csv"},
		{"testing:file_1.dat", "testing/a3/8b/file_1.dat"},
		{"user.a.b:x", "user/a/b/c4/b4/x"},
	} {
		d, err := ParseDID(c.did)
		if err != nil {
			t.Fatal(err)
		}
		if got := DeterministicPath(d); got != c.want {
			t.Errorf("%s: %s, want %s", c.did, got, c.want)
		}
	}
}

func TestParseDID(t *testing.T) {
	for _, bad := range []string{"", "noscope", ":name", "scope:", "a/b:c", "s:../x", "s:a/b", "s:..", "s:.", "s:x:y",
		strings.Repeat("s", 26) + ":x", "s:" + strings.Repeat("n", 251), "s:a\x00b"} {
		if _, err := ParseDID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		} else if st, _ := httpx.Status(err); st != 422 {
			t.Errorf("%q: status %d", bad, st)
		}
	}
	d, err := ParseDID("user.jdoe:run-1.fits")
	if err != nil || d.Scope != "user.jdoe" || d.Name != "run-1.fits" || d.String() != "user.jdoe:run-1.fits" {
		t.Fatalf("%+v %v", d, err)
	}
}

// hermes is a transfer-done message as Rucio's hermes daemon emits it.
const hermes = `{"event_type": "transfer-done", "created_at": "2026-11-26 10:00:00.000000",
 "payload": {"activity": "User Subscriptions", "request-id": "2f1e0c", "duration": 12, "checksum-adler": "19e20457",
  "checksum-md5": null, "file-size": 11, "bytes": 11, "guid": null, "previous-request-id": null, "protocol": "root",
  "scope": "user.jdoe", "name": "hello.txt", "dataset": null, "datasetScope": null, "src-type": "DISK",
  "src-rse": "CERN_DISK", "src-url": "root://eos.cern.ch//rucio/user/jdoe/hello.txt", "dst-type": "DISK",
  "dst-rse": "SKAO_SITE", "dst-url": "root://xrd.site:1094//rucio/user/jdoe/b3/6c/hello.txt",
  "reason": "", "transfer-endpoint": "https://fts:8446", "transfer-id": "8b1c", "transfer-link": null,
  "created_at": null, "submitted_at": "2026-11-26 09:59:00", "started_at": null, "transferred_at": "2026-11-26 10:00:00",
  "tool-id": "rucio-conveyor", "account": "jdoe"}}`

func TestParseTransferDone(t *testing.T) {
	full, err := ParseTransferDone([]byte(hermes))
	if err != nil {
		t.Fatal(err)
	}
	if full.DID().String() != "user.jdoe:hello.txt" || full.DstRSE != "SKAO_SITE" || full.Size() != 11 ||
		*full.ChecksumAdler != "19e20457" || full.ChecksumMD5 != nil || *full.Account != "jdoe" {
		t.Fatalf("%+v", full)
	}
	payloadOnly, err := ParseTransferDone([]byte(`{"scope":"s","name":"n","dst-rse":"R","file-size":"42","bytes":null}`))
	if err != nil || payloadOnly.Size() != 42 {
		t.Fatalf("%+v %v", payloadOnly, err)
	}
	for _, bad := range []string{`not json`, `{"event_type":"transfer-failed","payload":{"scope":"s","name":"n","dst-rse":"R"}}`,
		`{"scope":"s","name":"n"}`, `{"scope":"s/x","name":"n","dst-rse":"R"}`, `{"scope":"s","name":"n","dst-rse":"R","bytes":"many"}`} {
		if _, err := ParseTransferDone([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestVerify(t *testing.T) {
	adler, md5sum := "19e20457", "e29420b1442bd9345baf583389be37cb" // of "hello rucio", from Python's zlib and hashlib
	n := Number(11)
	wrong := "00000001"
	for _, c := range []struct {
		name string
		td   TransferDone
		ok   bool
	}{
		{"adler", TransferDone{Scope: "s", Name: "n", ChecksumAdler: &adler, Bytes: &n}, true},
		{"md5 when no adler", TransferDone{Scope: "s", Name: "n", ChecksumMD5: &md5sum}, true},
		{"no checksum", TransferDone{Scope: "s", Name: "n"}, true},
		{"wrong adler", TransferDone{Scope: "s", Name: "n", ChecksumAdler: &wrong}, false},
		{"wrong size", TransferDone{Scope: "s", Name: "n", ChecksumAdler: &adler, FileSize: new(Number)}, false},
	} {
		err := c.td.Verify(strings.NewReader("hello rucio"), 11)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
