package storage

import (
	"cmp"
	"errors"
	"io"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Entry is one item of a source directory listing.
type Entry struct {
	Name     string    `json:"name"`
	Type     string    `json:"type"` // "file" or "directory"
	Size     int64     `json:"size"` // bytes for files, 0 for directories
	Modified time.Time `json:"modified"`
}

// Listing is one directory of the source storage.
type Listing struct {
	Path      string  `json:"path"` // relative to the source root, "" for the root
	Entries   []Entry `json:"entries"`
	Truncated bool    `json:"truncated"`
}

// List lists the directory p of the source storage: its first limit
// entries by name that staging could use and keep (nil: all) lets through.
// Links leading out of the storage, broken links, special files and
// temporary names are left out, since staging them would fail. keep is
// asked before the limit applies, so a caller who may see only some
// entries sees the first limit of those, wherever they fall among the
// rest. Memory stays bounded by limit however large the directory is.
func (s *Storage) List(p string, limit int, keep func(rel string, isDir bool) bool) (*Listing, error) {
	if strings.ContainsRune(p, 0) || len(p) > staging.MaxPathBytes {
		return nil, staging.Errorf(staging.Invalid, "path must be a path of at most %d bytes without NUL", staging.MaxPathBytes)
	}
	rel := "."
	if p != "" {
		src, err := s.Source(p)
		if err != nil {
			return nil, err
		}
		if !src.Info.IsDir() {
			return nil, staging.Errorf(staging.Rejected, "Not a directory: %s", p)
		}
		rel = src.Rel
	}
	root := s.SourceRoot()
	dir, err := root.Open(rel)
	if err != nil {
		// Found just now: a folder the service may not read is 403, as
		// staging it is, not a missing path.
		return nil, SourceError(err, cmp.Or(p, "."))
	}
	defer dir.Close()

	// Keep the limit+1 smallest names seen so far (one more than shown
	// tells whether the listing is truncated).
	var kept []fs.DirEntry
	cut := false
	byName := func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) }
	for {
		batch, err := dir.ReadDir(limit + 1)
		for _, e := range batch {
			if !IsTemp(e.Name()) && (keep == nil || keep(path.Join(filepath.ToSlash(rel), e.Name()), e.IsDir())) {
				kept = append(kept, e)
			}
		}
		if len(kept) > 2*(limit+1) {
			slices.SortFunc(kept, byName)
			kept, cut = kept[:limit+1], true
		}
		if errors.Is(err, io.EOF) || len(batch) == 0 {
			break
		}
		if err != nil {
			return nil, staging.Wrap(staging.Internal, "Cannot read directory: "+p, err)
		}
	}
	slices.SortFunc(kept, byName)

	out := &Listing{Path: filepath.ToSlash(rel), Entries: []Entry{}, Truncated: cut}
	if out.Path == "." {
		out.Path = ""
	}
	for _, e := range kept {
		if len(out.Entries) == limit {
			out.Truncated = true
			break
		}
		// Stat through the root follows links that stay inside it and
		// refuses the others.
		info, err := root.Stat(path.Join(filepath.ToSlash(rel), e.Name()))
		if err != nil {
			continue
		}
		switch {
		case info.IsDir():
			out.Entries = append(out.Entries, Entry{Name: e.Name(), Type: "directory", Modified: info.ModTime().UTC()})
		case info.Mode().IsRegular():
			out.Entries = append(out.Entries, Entry{Name: e.Name(), Type: "file", Size: info.Size(), Modified: info.ModTime().UTC()})
		}
	}
	return out, nil
}
