package rucio

import (
	"errors"
	"path"
	"strings"
	"testing"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// FuzzParseDID checks that whatever a client sends as a DID, it is refused
// with a 422 or becomes a replica path that stays inside the RSE root.
func FuzzParseDID(f *testing.F) {
	for _, seed := range []string{"user.jdoe:image.fits", "group.skao:run-1.ms", "data:x", "s:..", "s:../x",
		"user.:x", "user..a:x", ".:x", "s:.", "s:a/b", "s:a\\b", "s:a\x00b", ":", "s:", ":n", "s:x:y",
		"user.jdoe:.skao-staging-0190b6a1-7e3c-7b3e-8000-000000000000.tmp", "user.jdoe:\u2025", "s:" + strings.Repeat("n", 251)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDID(s)
		if err != nil {
			wantClientError(t, "ParseDID", s, err)
			return
		}
		if d.String() != s {
			t.Fatalf("ParseDID(%q).String() = %q", s, d.String())
		}
		assertLocal(t, s, DeterministicPath(d))
	})
}

// FuzzParseTransferDone checks that any event data is refused with a 422 or
// parsed into a payload whose DID is valid and whose replica path stays
// inside the RSE root; it never panics.
func FuzzParseTransferDone(f *testing.F) {
	for _, seed := range []string{hermes,
		`{"scope":"s","name":"n","dst-rse":"R","file-size":"42","bytes":null}`,
		`{"event_type":"transfer-failed","payload":{"scope":"s","name":"n","dst-rse":"R"}}`,
		`{"event_type":"transfer-done","payload":null,"scope":"s","name":"n","dst-rse":"R"}`,
		`{"payload":{"scope":"user.x","name":"..","dst-rse":"R"}}`,
		`{"scope":"s","name":"n","dst-rse":"R","bytes":-1,"checksum-adler":"zz"}`,
		`{"scope":"s","name":"n","dst-rse":"R","bytes":"9223372036854775808"}`,
		`{"scope":"s","name":"n","dst-rse":"R","dst-url":"root://x//rucio/../../etc/passwd"}`,
		`[]`, `null`, `"x"`, `{"payload":[]}`, `{"scope":1}`, ``, `{`, strings.Repeat("[", 1000)} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		td, err := ParseTransferDone(data)
		if err != nil {
			wantClientError(t, "ParseTransferDone", string(data), err)
			return
		}
		if td.Scope == "" || td.Name == "" || td.DstRSE == "" {
			t.Fatalf("ParseTransferDone(%q) accepted a payload without scope, name or dst-rse: %+v", data, td)
		}
		if _, err := ParseDID(td.DID().String()); err != nil {
			t.Fatalf("ParseTransferDone(%q) accepted an invalid DID %q: %v", data, td.DID(), err)
		}
		assertLocal(t, string(data), DeterministicPath(td.DID()))
	})
}

// assertLocal fails unless p is a clean path below the root it is joined to.
func assertLocal(t *testing.T, input, p string) {
	t.Helper()
	if p == "" || path.IsAbs(p) || p != path.Clean(p) || p == "." || strings.HasPrefix(p, "../") || p == ".." {
		t.Fatalf("%q gives replica path %q, which leaves the RSE root", input, p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." || part == "" {
			t.Fatalf("%q gives replica path %q with element %q", input, p, part)
		}
	}
}

func wantClientError(t *testing.T, fn, input string, err error) {
	t.Helper()
	var se *staging.Error
	if !errors.As(err, &se) {
		t.Fatalf("%s(%q): %v (%T) is not a *staging.Error", fn, input, err, err)
	}
	if se.Kind != staging.Invalid || se.Detail == "" {
		t.Fatalf("%s(%q): %s %q, want invalid with a detail", fn, input, se.Kind, se.Detail)
	}
}
