package storage

import (
	"errors"
	"io/fs"
	"path"
	"path/filepath"
	"strings"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Resolve says where the source path p leads: its path relative to the
// source storage with every link resolved ("." for the root), and whether
// it is a folder. Links are followed as os.Root follows them, so a link
// leading out of the storage, or an absolute one, is refused (Forbidden);
// a path that does not exist is Rejected, as by Source. It is what
// capability checks compare, since the path a request names may pass
// through links.
func (s *Storage) Resolve(p string) (string, bool, error) {
	rel, err := s.sourceRel(p)
	if err != nil {
		return "", false, err
	}
	// sourceRel left no ".." in rel: one that climbs above the root here
	// comes from a link, as does an absolute target.
	escape := linkOutside(p, nil)
	var done []string // resolved elements so far
	todo := strings.Split(filepath.ToSlash(rel), "/")
	for links := 0; len(todo) > 0; {
		elem := todo[0]
		todo = todo[1:]
		switch elem {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				return "", false, escape
			}
			done = done[:len(done)-1]
			continue
		}
		cur := path.Join(append(done, elem)...)
		info, err := s.source.Lstat(cur)
		if err != nil {
			return "", false, SourceError(err, p)
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			done = append(done, elem)
			continue
		}
		if links++; links > maxLinks {
			return "", false, staging.Errorf(staging.Rejected, "Source path does not exist: %s", p)
		}
		target, err := s.source.Readlink(cur)
		if err != nil {
			return "", false, SourceError(err, p)
		}
		if filepath.IsAbs(target) {
			return "", false, escape
		}
		todo = append(strings.Split(filepath.ToSlash(target), "/"), todo...)
	}
	real := path.Join(done...)
	if real == "" {
		real = "."
	}
	info, err := s.source.Stat(real)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", false, staging.Wrap(staging.Rejected, "Source path does not exist: "+p, err)
		}
		return "", false, SourceError(err, p)
	}
	return real, info.IsDir(), nil
}
