package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/google/uuid"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// CreateFile writes a new file with content at name in the source storage
// (relative to it, or absolute under it) and returns its path relative to
// the storage. It never replaces or follows anything: the content goes to
// a new file that has no name yet (NewFile: unnamed, or a fresh temporary
// name opened exclusively, which never follows a link), then is given its
// name by a link or rename that fails if the name exists.
func (s *Storage) CreateFile(name string, content []byte) (string, error) {
	// The limits of a staging request's paths: a name the filesystem
	// would refuse is the client's error, found before any folder is made.
	if err := staging.CheckPath("filename", name, staging.DefaultMaxPathDepth); err != nil {
		return "", err
	}
	rel, err := s.sourceRel(name)
	if err != nil {
		return "", err
	}
	if rel == "." || IsTemp(filepath.Base(rel)) {
		return "", staging.Errorf(staging.Forbidden, "Path is outside the source storage: %s", name)
	}
	root := s.SourceRoot()
	if dir := filepath.Dir(rel); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return "", createError(err, rel)
		}
	}
	dir, err := root.OpenFile(filepath.Dir(rel), os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return "", createError(err, rel)
	}
	defer dir.Close()
	f, err := CreateIn(dir, TempName(uuid.Must(uuid.NewRandom()).String()), 0o644)
	if err != nil {
		return "", createError(err, rel)
	}
	if _, err := f.Write(content); err != nil {
		f.Discard()
		return "", createError(err, rel)
	}
	if err := f.Publish(filepath.Base(rel)); err != nil {
		return "", createError(err, rel)
	}
	return rel, nil
}

func createError(err error, rel string) error {
	switch {
	case IsEscape(err):
		return staging.Wrap(staging.Forbidden, "Path is outside the source storage: "+rel, err)
	case errors.Is(err, ErrExist), errors.Is(err, syscall.ENOTDIR):
		return staging.Wrap(staging.Conflict, "A file already exists at "+rel, err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return staging.Wrap(staging.InsufficientStorage, "No space left in the source storage", err)
	}
	return staging.Wrap(staging.Internal, fmt.Sprintf("Cannot create the file %s", rel), err)
}
