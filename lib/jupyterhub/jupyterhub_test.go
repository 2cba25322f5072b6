package jupyterhub

import (
	"bytes"
	"encoding/base64"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

func TestBase64Reader(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 4, 48<<10 - 1, 48 << 10, 48<<10 + 1, 3*48<<10 + 2, 1 << 20} {
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		want := base64.StdEncoding.EncodeToString(raw)
		// One byte at a time from the source, and small reads, must not
		// change the encoding (no padding in the middle).
		got, err := io.ReadAll(iotest.OneByteReader(newBase64Reader(iotest.HalfReader(bytes.NewReader(raw)))))
		if err != nil || string(got) != want {
			t.Fatalf("%d bytes: encoding differs (err %v)", n, err)
		}
	}
}

func TestBase64ReaderPassesErrors(t *testing.T) {
	_, err := io.ReadAll(newBase64Reader(iotest.TimeoutReader(bytes.NewReader(make([]byte, 100<<10)))))
	if err != iotest.ErrTimeout {
		t.Fatalf("error %v, want %v", err, iotest.ErrTimeout)
	}
}

func TestURLs(t *testing.T) {
	for _, tc := range []struct{ in, hub, contents string }{
		{"http://hub:8000", "http://hub:8000/hub/api/users/a%20b", "http://hub:8000/user/a%20b/api/contents/dir/x%3Fy%23z.txt"},
		{"http://hub:8000/", "http://hub:8000/hub/api/users/a%20b", "http://hub:8000/user/a%20b/api/contents/dir/x%3Fy%23z.txt"},
		{"https://h.org/jupyter/hub/api/", "https://h.org/jupyter/hub/api/users/a%20b", "https://h.org/jupyter/user/a%20b/api/contents/dir/x%3Fy%23z.txt"},
	} {
		c, err := New(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.hubURL("users", "a b"); got != tc.hub {
			t.Errorf("%s: hub URL %s, want %s", tc.in, got, tc.hub)
		}
		// The hub's server model gives the path with its base path.
		serverPath := "/user/a%20b/"
		if c.base.Path != "" {
			serverPath = c.base.Path + serverPath
		}
		if got := c.Contents(serverPath, StaticToken("t")).url("dir/x?y#z.txt"); got != tc.contents {
			t.Errorf("%s: contents URL %s, want %s", tc.in, got, tc.contents)
		}
	}
	for _, bad := range []string{"", "hub:8000", "ftp://hub", "http://"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}
