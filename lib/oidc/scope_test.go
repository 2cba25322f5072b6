package oidc

import (
	"errors"
	"testing"
)

// The path semantics of the WLCG Common JWT Profile 1.3, section 2.2.1,
// with the profile's own examples first.
func TestCanRead(t *testing.T) {
	for _, tc := range []struct {
		scopes []string
		path   string
		isDir  bool
		want   bool
	}{
		// "storage.read:/" covers everything the issuer may authorise.
		{[]string{"storage.read:/"}, "any/file", false, true},
		{[]string{"storage.read:/"}, "", true, true},
		{[]string{"storage.read:/"}, "/", true, true},
		// Hierarchy on path-element boundaries.
		{[]string{"storage.read:/foo/bar"}, "foo/bar", false, true},
		{[]string{"storage.read:/foo/bar"}, "foo/bar", true, true},
		{[]string{"storage.read:/foo/bar"}, "foo/bar/qux", false, true},
		{[]string{"storage.read:/foo/bar"}, "/foo/bar/qux/deep/er", false, true},
		{[]string{"storage.read:/foo/bar"}, "foo/bargain", false, false},
		{[]string{"storage.read:/foo/bar"}, "foo", true, false},
		{[]string{"storage.read:/foo/bar"}, "foo/ba", false, false},
		{[]string{"storage.read:/foo/bar"}, "", true, false},
		// A trailing "/" names a directory only.
		{[]string{"storage.read:/foo/bar/"}, "foo/bar", false, false},
		{[]string{"storage.read:/foo/bar/"}, "foo/bar", true, true},
		{[]string{"storage.read:/foo/bar/"}, "foo/bar/qux", false, true},
		// Request paths: leading slash or not, "." and doubled slashes
		// cleaned, ".." never accepted.
		{[]string{"storage.read:/foo"}, "./foo//x/./y", false, true},
		{[]string{"storage.read:/foo"}, "foo/../foo/x", false, false},
		{[]string{"storage.read:/"}, "../etc/passwd", false, false},
		{[]string{"storage.read:/foo"}, "foo/x\x00", false, false},
		// Scope paths are URL-escaped.
		{[]string{"storage.read:/my%20data"}, "my data/x", false, true},
		{[]string{"storage.read:/my%20data"}, "my%20data/x", false, false},
		// Non-conforming scope paths cover nothing.
		{[]string{"storage.read:foo"}, "foo", false, false},
		{[]string{"storage.read:"}, "foo", false, false},
		{[]string{"storage.read"}, "foo", false, false},
		{[]string{"storage.read:/a/../b"}, "b", false, false},
		{[]string{"storage.read:/a/%2E%2E/b"}, "b", false, false},
		{[]string{"storage.read://b"}, "b", false, false},
		{[]string{"storage.read:/a/./b"}, "a/b", false, false},
		{[]string{"storage.read:/%zz"}, "x", false, false},
		// Only storage.read reads: not stage (since 1.3), create or modify.
		{[]string{"storage.stage:/foo", "storage.create:/foo", "storage.modify:/foo"}, "foo/x", false, false},
		{[]string{"read:/foo", "storage.reader:/foo", "openid"}, "foo/x", false, false},
		// Several scopes: any one that covers.
		{[]string{"storage.create:/", "storage.read:/home/bob", "storage.read:/protected"}, "protected/a", false, true},
		{[]string{"storage.create:/", "storage.read:/home/bob"}, "home/alice", false, false},
		{nil, "foo", false, false},
	} {
		id := &Identity{Scopes: tc.scopes}
		if got := id.CanRead(tc.path, tc.isDir); got != tc.want {
			t.Errorf("scopes %q CanRead(%q, dir=%v) = %v, want %v", tc.scopes, tc.path, tc.isDir, got, tc.want)
		}
	}
}

func TestHasStorageScopes(t *testing.T) {
	if (&Identity{Scopes: []string{"openid", "profile"}}).HasStorageScopes() {
		t.Error("no storage scope reported as one")
	}
	if !(&Identity{Scopes: []string{"openid", "storage.create:/x"}}).HasStorageScopes() {
		t.Error("storage.create not reported")
	}
}

func TestCheckStorageScopes(t *testing.T) {
	for _, tc := range []struct {
		scopes []string
		ok     bool
	}{
		{[]string{"openid", "storage.read:/", "storage.create:/a/b", "compute.read"}, true},
		{[]string{"storage.read"}, false},
		{[]string{"storage.stage:"}, false},
		{[]string{"storage.modify:relative"}, false},
		{nil, true},
	} {
		err := checkStorageScopes(tc.scopes)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrUnauthenticated)) {
			t.Errorf("%q: %v, want ok=%v", tc.scopes, err, tc.ok)
		}
	}
}

func TestCanList(t *testing.T) {
	id := &Identity{Scopes: []string{"openid", "storage.read:/obs/2026/run1", "storage.read:/public/"}}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"", true},         // the root leads to both
		{"obs", true},      // an ancestor of a scope's path
		{"obs/2026", true}, // so is this
		{"obs/2026/run1", true},
		{"obs/2026/run1/sub", true},
		{"obs/2025", false},
		{"ob", false}, // not on an element boundary
		{"obs/2026/run10", false},
		{"public", true},
		{"private", false},
		{"obs/../private", false},
	} {
		if got := id.CanList(tc.path); got != tc.want {
			t.Errorf("CanList(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}
