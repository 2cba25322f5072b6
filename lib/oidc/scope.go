package oidc

import (
	"fmt"
	"net/url"
	"strings"
)

// The WLCG Common JWT Profile (version 1.3, section 2.2.1) gives storage
// scopes the form storage.<operation>:<path>. The path is absolute,
// normalised and URL-escaped, "/" being the whole area the issuer may
// authorise (here SOURCE_STORAGE_PATH); it covers itself and everything
// below it, on path-element boundaries (/foo covers /foo/bar, not /foobar);
// with a trailing "/" it names a directory only. Every storage.* scope must
// have a path, else the token is refused. storage.stage no longer implies
// read; nothing but storage.read does.

const storagePrefix = "storage."

// HasStorageScopes reports whether the token carries any storage.*
// capability. The profile (section 2.2.3) asks a service that knows both
// kinds of authorization to decide by capabilities alone when a token has
// any, and by groups otherwise.
func (id *Identity) HasStorageScopes() bool {
	for _, s := range id.Scopes {
		if strings.HasPrefix(s, storagePrefix) {
			return true
		}
	}
	return false
}

// CanRead reports whether a storage.read scope of the token covers path,
// a source relative to the storage root ("obs/vis.ms"; a leading "/" is
// the same root). isDir says whether path is a directory, which a scope
// path with a trailing "/" requires. A path with ".." elements is never
// covered: it is the lexical path that is compared, so the caller should
// pass the path it resolved (inside its os.Root), not the one it was sent.
func (id *Identity) CanRead(path string, isDir bool) bool {
	req, ok := requestPath(path)
	if !ok {
		return false
	}
	for _, s := range id.Scopes {
		p, ok := strings.CutPrefix(s, storagePrefix+"read:")
		if !ok {
			continue
		}
		if scopeCovers(p, req, isDir) {
			return true
		}
	}
	return false
}

// requestPath cleans a source path into "/a/b" form ("/" for the root),
// refusing ".." elements and NUL bytes rather than resolving them.
func requestPath(p string) (string, bool) {
	if strings.ContainsRune(p, 0) {
		return "", false
	}
	var elems []string
	for _, e := range strings.Split(p, "/") {
		switch e {
		case "", ".":
		case "..":
			return "", false
		default:
			elems = append(elems, e)
		}
	}
	return "/" + strings.Join(elems, "/"), true
}

// scopeCovers applies one scope path. A scope path that is not absolute and
// normalised (empty, "." or ".." elements, "//") covers nothing: the
// profile leaves such tokens to the implementation, and ignoring the scope
// can only grant less.
func scopeCovers(scopePath, req string, isDir bool) bool {
	p, err := url.PathUnescape(scopePath)
	if err != nil || !strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) {
		return false
	}
	if p == "/" {
		return true
	}
	dirOnly := strings.HasSuffix(p, "/")
	base := strings.TrimSuffix(p, "/")
	for _, e := range strings.Split(base[1:], "/") {
		if e == "" || e == "." || e == ".." {
			return false
		}
	}
	switch {
	case req == base:
		return !dirOnly || isDir
	case strings.HasPrefix(req, base+"/"):
		return true
	}
	return false
}

// checkStorageScopes refuses storage.* scopes without an absolute path.
func checkStorageScopes(scopes []string) error {
	for _, s := range scopes {
		if !strings.HasPrefix(s, storagePrefix) {
			continue
		}
		_, p, ok := strings.Cut(s, ":")
		if !ok || !strings.HasPrefix(p, "/") {
			return fmt.Errorf("%w: %q", ErrBadStorageScopes, s)
		}
	}
	return nil
}

// CanList reports whether the folder path may be listed: a storage.read
// scope covers it, or it leads to one (an ancestor of a scope's path), so
// a user can browse down to what they may read.
func (id *Identity) CanList(path string) bool {
	if id.CanRead(path, true) {
		return true
	}
	req, ok := requestPath(path)
	if !ok {
		return false
	}
	for _, s := range id.Scopes {
		p, ok := strings.CutPrefix(s, storagePrefix+"read:")
		if !ok {
			continue
		}
		if p, err := url.PathUnescape(p); err == nil && strings.HasPrefix(p, "/") &&
			(req == "/" || strings.HasPrefix(p, req+"/")) {
			return true
		}
	}
	return false
}
