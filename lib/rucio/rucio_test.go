package rucio

import (
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
)

// The expected paths were computed apart from this code, with Python's
// hashlib following Rucio's lfn2pfn "hash" algorithm. The first two are
// Rucio's own vectors (tests/test_rse_lfn2path.py, test_hash and
// test_user_scope); those with a '/' in the name come from Rucio's
// RSEDeterministicTranslation.__hash (lib/rucio/rse/translation.py) run
// as is, which gives "skao/ab/ad//lsst/raw/x.fits" for a name with a
// leading '/': the same file on a POSIX mount.
func TestDeterministicPath(t *testing.T) {
	for _, c := range []struct{ did, want string }{
		{"foo:bar", "foo/4e/99/bar"},
		{"user.foo:bar", "user/foo/13/7f/bar"},
		{"skao:vis.ms", "skao/a4/e4/vis.ms"},
		{"user.jdoe:image.fits", "user/jdoe/88/bc/image.fits"},
		{"group.sdc:catalogue.csv", "group/sdc/14/a3/catalogue.csv"},
		{"testing:file_1.dat", "testing/a3/8b/file_1.dat"},
		{"user.a.b:x", "user/a/b/c4/b4/x"},
		{"skao:data/run1/vis.ms", "skao/87/a8/data/run1/vis.ms"},
		{"skao:/lsst/raw/x.fits", "skao/ab/ad/lsst/raw/x.fits"},
		{"user.jdoe:a..b.fits", "user/jdoe/33/87/a..b.fits"},
		{"group.sdc:cat/v2/catalogue.csv", "group/sdc/94/07/cat/v2/catalogue.csv"},
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
	for _, bad := range []string{"", "noscope", ":name", "scope:", "a/b:c", "s:../x", "s:a/../../x", "s:a/./b", "s:a/..",
		"s:a/", "s:/", "s:..", "s:.", "s:x:y", "..:x", "s:a\\b",
		strings.Repeat("s", 26) + ":x", "s:" + strings.Repeat("n", 251), "s:a\x00b"} {
		if _, err := ParseDID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		} else if st, _ := httpx.Status(err); st != 422 {
			t.Errorf("%q: status %d", bad, st)
		}
	}
	// Names Rucio's generic schema takes (lib/rucio/common/schema/generic.py,
	// NAME: ^[/A-Za-z0-9][/A-Za-z0-9\.\-_]*$, at most 250 characters).
	for _, good := range []string{"skao:data/run1/vis.ms", "skao:/lsst/raw/x.fits", "skao:a..b", "skao:a//b",
		"user.jdoe:" + strings.Repeat("n", 250)} {
		if _, err := ParseDID(good); err != nil {
			t.Errorf("%q refused: %v", good, err)
		}
	}
	d, err := ParseDID("user.jdoe:run-1.fits")
	if err != nil || d.Scope != "user.jdoe" || d.Name != "run-1.fits" || d.String() != "user.jdoe:run-1.fits" {
		t.Fatalf("%+v %v", d, err)
	}
}

// hermes is a transfer-done message as Rucio's hermes daemon emits it to
// ActiveMQ: deliver_to_activemq (lib/rucio/daemons/hermes/hermes.py) sends
// {"event_type", "payload", "created_at"}; the payload is what
// add_monitor_message (lib/rucio/core/request.py) builds, with the fields
// FTS's get_monitor_msg_fields adds (lib/rucio/transfertool/fts3.py; its
// "transfer_link" beside Rucio's null "transfer-link"). Sizes are numbers,
// request-id 32 lowercase hex digits (the GUID type of
// lib/rucio/db/sqla/types.py), dates str(datetime), and dst-url the PFN of
// the DID's deterministic path (user/jdoe/04/49/hello.txt).
const hermes = `{"event_type": "transfer-done", "payload": {"activity": "User Subscriptions",
  "request-id": "2f1e0c8a5d3b4e6f9a7c1b2d3e4f5a6b", "duration": 3, "checksum-adler": "19e20457",
  "checksum-md5": null, "file-size": 11, "bytes": 11, "guid": null, "previous-request-id": null, "protocol": "root",
  "scope": "user.jdoe", "name": "hello.txt", "dataset": null, "datasetScope": null, "src-type": "DISK",
  "src-rse": "CERN_DISK", "src-url": "root://eos.cern.ch:1094//eos/rucio/user/jdoe/04/49/hello.txt", "dst-type": "DISK",
  "dst-rse": "SKAO_SITE", "dst-url": "root://xrd.site:1094//rucio/user/jdoe/04/49/hello.txt",
  "reason": "", "transfer-endpoint": "https://fts:8446", "transfer-id": "8b1c6f2e-3d4a-11f0-9c1e-fa163e0c2d3b",
  "transfer-link": null, "created_at": "2026-11-26 09:58:00", "submitted_at": "2026-11-26 09:59:00",
  "started_at": "2026-11-26 09:59:57", "transferred_at": "2026-11-26 10:00:00", "tool-id": "rucio-conveyor",
  "account": "jdoe", "datatype": null, "transfer_link": "https://fts:8449/fts3/ftsmon/#/job/8b1c6f2e-3d4a-11f0-9c1e-fa163e0c2d3b"},
 "created_at": "2026-11-26 10:00:01.123456"}`

func TestParseTransferDone(t *testing.T) {
	full, err := ParseTransferDone([]byte(hermes))
	if err != nil {
		t.Fatal(err)
	}
	if full.DID().String() != "user.jdoe:hello.txt" || full.DstRSE != "SKAO_SITE" || full.Size() != 11 ||
		*full.ChecksumAdler != "19e20457" || full.ChecksumMD5 != nil || *full.Account != "jdoe" {
		t.Fatalf("%+v", full)
	}
	if want := "//rucio/" + DeterministicPath(full.DID()); !strings.HasSuffix(full.DstURL, want) {
		t.Fatalf("dst-url %s does not end with %s", full.DstURL, want)
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

// Rucio writes adler32 as 8 lowercase hex digits, zero-padded
// (lib/rucio/common/checksum.py, adler32: '%08x'), and takes upper case too
// (lib/rucio/common/schema/generic.py, ADLER32: ^[a-fA-F\d]{8}$); its
// upload client compares them without leading zeros
// (lib/rucio/client/uploadclient.py: .lstrip('0')). The expected values
// are Python's zlib.adler32 formatted as Rucio does.
func TestVerifyAdler32AsRucioWritesIt(t *testing.T) {
	for _, c := range []struct {
		content, adler string
		ok             bool
	}{
		{"", "00000001", true},
		{"a", "00620062", true},
		{"a", "620062", true},
		{"hello rucio", "19e20457", true},
		{"hello rucio", "19E20457", true},
		{"a", "00620063", false},
		{"a", "0x620062", false},
		{"a", "not hex", false},
	} {
		adler := c.adler
		td := TransferDone{Scope: "s", Name: "n", ChecksumAdler: &adler}
		err := td.Verify(strings.NewReader(c.content), int64(len(c.content)))
		if (err == nil) != c.ok {
			t.Errorf("%q with checksum-adler %q: %v, want ok=%v", c.content, c.adler, err, c.ok)
		}
	}
}
