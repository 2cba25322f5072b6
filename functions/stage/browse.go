package main

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// maxBrowse is the most entries one listing returns; a larger directory is
// answered with its first maxBrowse names and "truncated": true.
const maxBrowse = 1000

// entry is one item of a source directory listing.
type entry struct {
	Name     string    `json:"name"`
	Type     string    `json:"type"` // "file" or "directory"
	Size     int64     `json:"size"` // bytes for files, 0 for directories
	Modified time.Time `json:"modified"`
}

// listing is the answer of GET /browse.
type listing struct {
	Path      string  `json:"path"` // relative to the source root, "" for the root
	Entries   []entry `json:"entries"`
	Truncated bool    `json:"truncated"`
}

// browse is GET /browse?path=: one directory of the source storage, so a
// user can pick local_path_on_storage instead of typing it. Paths follow the
// staging rules (os.Root): escapes are 403, missing paths 400.
func (a *api) browse(w http.ResponseWriter, r *http.Request) {
	l, err := listSource(a.f.Storage, r.URL.Query().Get("path"), maxBrowse)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	httpx.JSON(w, http.StatusOK, l)
}

// listSource lists the directory p of the source storage: its first limit
// entries by name that staging could use. Links leading out of the storage,
// broken links, special files and temporary names are left out, since
// staging them would fail. Memory stays bounded by limit however large the
// directory is.
func listSource(st *storage.Storage, p string, limit int) (*listing, error) {
	if strings.ContainsRune(p, 0) || len(p) > 4096 {
		return nil, staging.Errorf(http.StatusUnprocessableEntity, "path must be a path of at most 4096 bytes without NUL")
	}
	rel := "."
	if p != "" {
		src, err := st.Source(p)
		if err != nil {
			return nil, err
		}
		if !src.Info.IsDir() {
			return nil, staging.Errorf(http.StatusBadRequest, "Not a directory: %s", p)
		}
		rel = src.Rel
	}
	root := st.SourceRoot()
	dir, err := root.Open(rel)
	if err != nil {
		return nil, staging.Wrap(http.StatusBadRequest, "Cannot open directory: "+p, err)
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
			if !storage.IsTemp(e.Name()) {
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
			return nil, staging.Wrap(http.StatusInternalServerError, "Cannot read directory: "+p, err)
		}
	}
	slices.SortFunc(kept, byName)

	out := &listing{Path: filepath.ToSlash(rel), Entries: []entry{}, Truncated: cut}
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
			out.Entries = append(out.Entries, entry{Name: e.Name(), Type: "directory", Modified: info.ModTime().UTC()})
		case info.Mode().IsRegular():
			out.Entries = append(out.Entries, entry{Name: e.Name(), Type: "file", Size: info.Size(), Modified: info.ModTime().UTC()})
		}
	}
	return out, nil
}
