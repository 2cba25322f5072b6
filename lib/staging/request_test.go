package staging

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
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

// FuzzValidUsername checks the hand-written ValidUsername against the
// expression the refusals quote.
func FuzzValidUsername(f *testing.F) {
	for _, u := range []string{"alice", "a.b@c+d-e_f", "_x", "", "..", "-x", "a..b", "alïce", "a" + strings.Repeat("b", 127), "a" + strings.Repeat("b", 128)} {
		f.Add(u)
	}
	pattern := regexp.MustCompile(usernamePattern)
	f.Fuzz(func(t *testing.T, u string) {
		if want := pattern.MatchString(u) && !strings.Contains(u, ".."); ValidUsername(u) != want {
			t.Errorf("ValidUsername(%q) = %v, want %v (%s)", u, !want, want, usernamePattern)
		}
	})
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

func TestKindOf(t *testing.T) {
	cause := errors.New("connection refused")
	for _, tc := range []struct {
		name      string
		err       error
		kind      Kind
		detail    string
		transient bool
	}{
		{"Errorf", Errorf(Conflict, "A different file at %s", "a/b"), Conflict, "A different file at a/b", false},
		{"Wrap hides the cause", Wrap(Forbidden, "Source path is outside the source storage: x", cause), Forbidden, "Source path is outside the source storage: x", false},
		{"wrapped in fmt.Errorf", fmt.Errorf("stage: %w", Errorf(Rejected, "bad")), Rejected, "bad", false},
		{"joined", errors.Join(errors.New("other"), Errorf(NotFound, "Operation not found: x")), NotFound, "Operation not found: x", false},
		{"database", DatabaseUnavailable(cause), Unavailable, "Database unavailable", true},
		{"canceled", Wrap(Canceled, "Download interrupted", context.Canceled), Canceled, "Download interrupted", false},
		{"insufficient storage", Errorf(InsufficientStorage, "No space left in the user area"), InsufficientStorage, "No space left in the user area", true},
		{"too many", Errorf(TooMany, "Busy"), TooMany, "Busy", true},
		// Anything that is not an *Error may name internals: a stable detail only.
		{"plain error", cause, Internal, "Internal error", true},
		{"context error", context.DeadlineExceeded, Internal, "Internal error", true},
		{"plain wrapping plain", fmt.Errorf("open /srv/x: %w", cause), Internal, "Internal error", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind, detail := KindOf(tc.err)
			if kind != tc.kind || detail != tc.detail {
				t.Errorf("KindOf = %s %q, want %s %q", kind, detail, tc.kind, tc.detail)
			}
			if got := Transient(tc.err); got != tc.transient {
				t.Errorf("Transient = %v, want %v", got, tc.transient)
			}
		})
	}
	// The cause stays reachable for logs and errors.Is, never in the detail.
	err := Wrap(Unavailable, "Database unavailable", cause)
	if !errors.Is(err, cause) {
		t.Error("Wrap loses its cause for errors.Is")
	}
	if err.Error() != "Database unavailable: connection refused" {
		t.Errorf("Error() = %q", err.Error())
	}
	if e := Errorf(Rejected, "x"); e.Error() != "x" || e.Unwrap() != nil {
		t.Errorf("Errorf without cause: %q, %v", e.Error(), e.Unwrap())
	}
}

func TestCheckPath(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		ok         bool
	}{
		{"plain", "a/b/c.fits", true},
		{"empty", "", true},
		{"longest name", strings.Repeat("n", MaxNameBytes), true},
		{"name too long", strings.Repeat("n", MaxNameBytes+1), false},
		{"deepest", strings.Repeat("d/", 8) + "f", false},
		{"deep enough", strings.Repeat("d/", 7) + "f", true},
		{"slashes and dots do not count", strings.Repeat("./", 20) + strings.Repeat("/", 20) + "f", true},
		{"longest path", strings.Repeat("a", MaxPathBytes), false},
		{"too long", strings.Repeat("a/", MaxPathBytes/2+1), false},
		{"NUL", "a\x00b", false},
	} {
		err := CheckPath("relative_path", tc.path, 8)
		if tc.ok != (err == nil) {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
		if k, _ := KindOf(err); err != nil && k != Invalid {
			t.Errorf("%s: kind %s, want invalid", tc.name, k)
		}
	}
}

func TestTruncate(t *testing.T) {
	if got := truncate("short"); got != "short" {
		t.Errorf("truncate(short) = %q", got)
	}
	long := strings.Repeat("é", MaxText) // two bytes each
	got := truncate(long)
	if len(got) > MaxText || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
		t.Errorf("truncate: %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}
