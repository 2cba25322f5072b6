package staging

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestValidUsername(t *testing.T) {
	for _, tc := range []struct {
		name string
		user string
		want bool
	}{
		{"plain", "alice", true},
		{"all allowed punctuation", "a.b@c+d-e_f", true},
		{"leading underscore", "_x", true},
		{"leading digit", "1user", true},
		{"single character", "a", true},
		{"upper case", "Alice", true},
		{"email", "alice.smith@skao.int", true},
		{"128 characters", "a" + strings.Repeat("b", 127), true},
		{"single dots apart", "a.b.c", true},

		{"empty", "", false},
		{"dot-dot", "..", false},
		{"dot", ".", false},
		{"a..b", "a..b", false},
		{"trailing dot-dot", "ab..", false},
		{"leading dash", "-x", false},
		{"leading dot", ".x", false},
		{"leading at", "@x", false},
		{"leading plus", "+x", false},
		{"129 characters", "a" + strings.Repeat("b", 128), false},
		{"slash", "a/b", false},
		{"backslash", `a\b`, false},
		{"space", "a b", false},
		{"leading space", " alice", false},
		{"trailing newline", "alice\n", false},
		{"NUL", "a\x00b", false},
		{"unicode letter", "alïce", false},
		{"unicode only", "ユーザー", false},
		{"colon", "a:b", false},
		{"tilde", "~alice", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidUsername(tc.user); got != tc.want {
				t.Errorf("ValidUsername(%q) = %v, want %v", tc.user, got, tc.want)
			}
		})
	}
}

func TestLockKey(t *testing.T) {
	k := LockKey("alice", "data/obs.fits")
	if len(k) != 64 || strings.Trim(k, "0123456789abcdef") != "" {
		t.Fatalf("LockKey = %q, want 64 hex digits", k)
	}
	if LockKey("alice", "data/obs.fits") != k {
		t.Error("LockKey is not stable")
	}
	// Pinned (sha256 of "target\x00alice\x00data/obs.fits\x00"): replicas of
	// two releases running side by side during an upgrade must agree.
	if want := "bc95fc433094e12af9e0c47602b5e8fac6f6bd8e9632d58a4f54e7df46a5e875"; k != want {
		t.Errorf("LockKey(alice, data/obs.fits) = %s, want %s", k, want)
	}
	// Spellings of the same target share the lock.
	for _, same := range []string{"data//obs.fits", "./data/obs.fits", "data/x/../obs.fits", "data/obs.fits/"} {
		if got := LockKey("alice", same); got != k {
			t.Errorf("LockKey(alice, %q) differs from LockKey(alice, data/obs.fits)", same)
		}
	}
	// Anything else does not.
	seen := map[string]string{k: "alice data/obs.fits"}
	for _, other := range [][2]string{
		{"bob", "data/obs.fits"},
		{"alice", "data/obs.fit"},
		{"alice", "Data/obs.fits"},
		{"alice", "obs.fits"},
		{"alic", "edata/obs.fits"}, // no ambiguity where user and path meet
		{"alice\x00data", "obs.fits"},
		{"", "alice/data/obs.fits"},
	} {
		got := LockKey(other[0], other[1])
		if prev, dup := seen[got]; dup {
			t.Errorf("LockKey(%q, %q) = LockKey of %s", other[0], other[1], prev)
		}
		seen[got] = fmt.Sprintf("%q", other)
	}
	// Locks and event keys live in different columns but must never be
	// confused: the same strings give different keys.
	if LockKey("alice", "x") == EventKey("alice", "x") {
		t.Error("LockKey and EventKey agree on the same input")
	}
}

func TestEventKey(t *testing.T) {
	k := EventKey("/apis/v1/namespaces/default/pingsources/p", "0190b6a1-7e3c-7b3e-8000-000000000001")
	if len(k) != 64 {
		t.Fatalf("EventKey = %q, want 64 hex digits", k)
	}
	if EventKey("/apis/v1/namespaces/default/pingsources/p", "0190b6a1-7e3c-7b3e-8000-000000000001") != k {
		t.Error("EventKey is not stable")
	}
	// Pinned (sha256 of "event\x00source\x00id\x00"): a change would make
	// every stored event key miss, so redeliveries across an upgrade would
	// stage twice.
	if got, want := EventKey("source", "id"), "f9bda99dc8826623bffa24d458dc9276f1249a985699026660004a5a9c729f4d"; got != want {
		t.Errorf("EventKey(source, id) = %s, want %s", got, want)
	}
	seen := map[string]bool{k: true}
	for _, other := range [][2]string{
		{"/apis/v1/namespaces/default/pingsources/p", "0190b6a1-7e3c-7b3e-8000-000000000002"},
		{"/apis/v1/namespaces/default/pingsources/q", "0190b6a1-7e3c-7b3e-8000-000000000001"},
		{"ab", "c"}, {"a", "bc"}, {"", "abc"}, {"abc", ""},
	} {
		got := EventKey(other[0], other[1])
		if seen[got] {
			t.Errorf("EventKey(%q, %q) collides", other[0], other[1])
		}
		seen[got] = true
	}
}

func TestStatusOf(t *testing.T) {
	cause := errors.New("connection refused")
	for _, tc := range []struct {
		name      string
		err       error
		status    int
		detail    string
		transient bool
	}{
		{"Errorf", Errorf(http.StatusConflict, "A different file at %s", "/a/b"), 409, "A different file at /a/b", false},
		{"Wrap hides the cause", Wrap(http.StatusForbidden, "Source path is outside the source storage: x", cause), 403, "Source path is outside the source storage: x", false},
		{"wrapped in fmt.Errorf", fmt.Errorf("stage: %w", Errorf(http.StatusBadRequest, "bad")), 400, "bad", false},
		{"joined", errors.Join(errors.New("other"), Errorf(http.StatusNotFound, "Operation not found: x")), 404, "Operation not found: x", false},
		{"Unavailable", Unavailable(cause), 503, "Database unavailable", true},
		{"499", Wrap(499, "Download interrupted", context.Canceled), 499, "Download interrupted", false},
		{"insufficient storage", Errorf(http.StatusInsufficientStorage, "No space left in the user area"), 507, "No space left in the user area", true},
		{"plain error", cause, 500, "Internal error: connection refused", true},
		{"context error", context.DeadlineExceeded, 500, "Internal error: context deadline exceeded", true},
		{"plain wrapping plain", fmt.Errorf("open: %w", cause), 500, "Internal error: open: connection refused", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, detail := StatusOf(tc.err)
			if status != tc.status || detail != tc.detail {
				t.Errorf("StatusOf = %d %q, want %d %q", status, detail, tc.status, tc.detail)
			}
			if got := Transient(tc.err); got != tc.transient {
				t.Errorf("Transient = %v, want %v", got, tc.transient)
			}
		})
	}
	// The cause stays reachable for logs and errors.Is, never in the detail.
	err := Wrap(http.StatusServiceUnavailable, "Database unavailable", cause)
	if !errors.Is(err, cause) {
		t.Error("Wrap loses its cause for errors.Is")
	}
	if err.Error() != "Database unavailable: connection refused" {
		t.Errorf("Error() = %q", err.Error())
	}
	if e := Errorf(400, "x"); e.Error() != "x" || e.Unwrap() != nil {
		t.Errorf("Errorf without cause: %q, %v", e.Error(), e.Unwrap())
	}
}
