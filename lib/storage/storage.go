// Package storage resolves user-supplied paths under the two storage roots,
// the site's source storage and the users' areas, through os.Root, so no path
// ('..', absolute, or a symlink) can reach outside them.
package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Storage holds the source root and the root of all user areas.
type Storage struct {
	SourcePath string // SOURCE_STORAGE_PATH, absolute
	TargetPath string // TARGET_STORAGE_PATH, absolute
	sourceReal string // SourcePath with symlinks evaluated
	source     *os.Root
	target     *os.Root
}

// Open opens both roots. The source must exist; the target is created.
func Open(sourcePath, targetPath string) (*Storage, error) {
	if sourcePath == "" || targetPath == "" {
		return nil, errors.New("SOURCE_STORAGE_PATH and TARGET_STORAGE_PATH are required")
	}
	src, err := os.OpenRoot(sourcePath)
	if err != nil {
		return nil, fmt.Errorf("open source storage: %w", err)
	}
	if err := os.MkdirAll(targetPath, 0o755); err != nil {
		src.Close()
		return nil, fmt.Errorf("create target storage: %w", err)
	}
	dst, err := os.OpenRoot(targetPath)
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("open target storage: %w", err)
	}
	real, err := filepath.EvalSymlinks(sourcePath)
	if err != nil {
		real = sourcePath
	}
	if err := apart(real, targetPath); err != nil {
		src.Close()
		dst.Close()
		return nil, err
	}
	return &Storage{SourcePath: filepath.Clean(sourcePath), TargetPath: filepath.Clean(targetPath),
		sourceReal: real, source: src, target: dst}, nil
}

// apart refuses storage roots of which one holds the other: user areas
// inside the source storage could be staged from by anyone, and a source
// inside the user areas written by its users.
func apart(sourceReal, targetPath string) error {
	targetReal, err := filepath.EvalSymlinks(targetPath)
	if err != nil {
		targetReal = targetPath
	}
	a, b := filepath.Clean(sourceReal), filepath.Clean(targetReal)
	if within(a, b) || within(b, a) {
		return fmt.Errorf("SOURCE_STORAGE_PATH (%s) and TARGET_STORAGE_PATH (%s) must not hold one another: "+
			"users could read each other's areas through source paths", a, b)
	}
	return nil
}

// within reports whether p is dir or under it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && (rel == "." || filepath.IsLocal(rel))
}

// Close closes both roots.
func (s *Storage) Close() error {
	return errors.Join(s.source.Close(), s.target.Close())
}

// SourceRoot is the traversal-safe root of the source storage.
func (s *Storage) SourceRoot() *os.Root { return s.source }

// Source is a resolved source path.
type Source struct {
	Rel  string      // relative to the source root, "." for the root itself
	Path string      // absolute path as the service sees it
	Info fs.FileInfo // of what the path names, links inside the root followed
}

// Source resolves local_path_on_storage, absolute (then under the source
// root) or relative to it. Escapes are Forbidden, missing paths Rejected.
func (s *Storage) Source(p string) (*Source, error) {
	rel, err := s.sourceRel(p)
	if err != nil {
		return nil, err
	}
	info, err := s.source.Stat(rel)
	if err != nil {
		return nil, SourceError(err, p)
	}
	// Only files and folders are staged, by every method: a FIFO, a
	// socket or a device is refused here, before anything opens it.
	if !info.Mode().IsRegular() && !info.IsDir() {
		return nil, staging.Errorf(staging.Rejected, "Unsupported source type (not a file or directory): %s", p)
	}
	return &Source{Rel: rel, Path: filepath.Join(s.SourcePath, rel), Info: info}, nil
}

func (s *Storage) sourceRel(p string) (string, error) {
	if p == "" {
		return "", staging.Errorf(staging.Invalid, "local_path_on_storage is required")
	}
	if strings.ContainsRune(p, 0) {
		return "", staging.Errorf(staging.Invalid, "Source path contains a NUL byte")
	}
	if filepath.IsAbs(p) {
		clean := filepath.Clean(p)
		for _, root := range []string{s.SourcePath, s.sourceReal} {
			if rel, err := filepath.Rel(root, clean); err == nil && filepath.IsLocal(rel) || rel == "." {
				return rel, nil
			}
		}
		return "", staging.Errorf(staging.Forbidden, "Source path is outside the source storage: %s", p)
	}
	if !filepath.IsLocal(p) {
		if filepath.Clean(p) == "." {
			return ".", nil
		}
		return "", staging.Errorf(staging.Forbidden, "Source path is outside the source storage: %s", p)
	}
	return filepath.Clean(p), nil
}

// TargetRel validates relative_path: a local path inside the user area, not
// the area itself.
func TargetRel(p string) (string, error) {
	if p == "" {
		return "", staging.Errorf(staging.Invalid, "relative_path is required")
	}
	if strings.ContainsRune(p, 0) {
		return "", staging.Errorf(staging.Invalid, "Target path contains a NUL byte")
	}
	if !filepath.IsLocal(p) {
		return "", staging.Errorf(staging.Forbidden, "Target path is outside the user area: %s", p)
	}
	rel := filepath.Clean(p)
	if rel == "." {
		return "", staging.Errorf(staging.Rejected, "Target path names the user area itself: %s", p)
	}
	// No element may be a temporary name: staging into another operation's
	// temporary folder would add to its copy, and the sweep removes it.
	for _, name := range strings.Split(rel, string(filepath.Separator)) {
		if IsTemp(name) {
			return "", staging.Errorf(staging.Rejected, "Target name is reserved for temporary files: %s", p)
		}
	}
	return rel, nil
}

// UserArea opens the user's area TARGET_STORAGE_PATH/<username>, creating it.
// The username must already be validated.
func (s *Storage) UserArea(username string) (*os.Root, error) {
	if !filepath.IsLocal(username) || strings.ContainsRune(username, '/') {
		return nil, staging.Errorf(staging.Invalid, "Invalid username: %s", username)
	}
	// The area usually exists: open it first, create it only when missing.
	root, err := s.target.OpenRoot(username)
	if err != nil {
		if err := s.target.Mkdir(username, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, classify(err, "User area cannot be created", "User area is outside the target storage")
		}
		root, err = s.target.OpenRoot(username)
	}
	if err != nil {
		return nil, classify(err, "User area cannot be opened", "User area is outside the target storage")
	}
	return root, nil
}

// UserAreaPath is the absolute path of a user's area.
func (s *Storage) UserAreaPath(username string) string {
	return filepath.Join(s.TargetPath, username)
}

// TargetRoot is the traversal-safe root of all user areas.
func (s *Storage) TargetRoot() *os.Root { return s.target }

// linkOutside is the refusal of a source path p that lies inside the
// source storage as written but passes through a link leading out of it
// (an absolute link counts: os.Root cannot tell where it leads). Saying the
// path itself is outside would send the user looking at what they typed.
func linkOutside(p string, err error) error {
	return staging.Wrap(staging.Forbidden, "Source path goes through a link leading outside the source storage: "+p, err)
}

// SourceError classifies an error met on the source path p once p is
// known to lie inside the storage as written (an escape can then only be
// a link leading out): staging, browsing and every method's walk answer
// alike. A refusal the service may not read is the site's permissions, as
// permanent as a missing path.
func SourceError(err error, p string) error {
	switch {
	case IsEscape(err):
		return linkOutside(p, err)
	case errors.Is(err, fs.ErrPermission):
		return staging.Wrap(staging.Forbidden, "Permission denied reading the source: "+p, err)
	case missing(err):
		return staging.Wrap(staging.Rejected, "Source path does not exist: "+p, err)
	}
	return staging.Wrap(staging.Internal, "Cannot read the source: "+p, err)
}

// missing reports an error as permanent as a missing path: a link loop or
// an overlong name is not a transient failure a broker would redeliver.
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) ||
		errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENAMETOOLONG)
}

// classify turns an os.Root error into Rejected (missing), Forbidden
// (escape, permission) or Internal.
func classify(err error, missingText, escape string) error {
	switch {
	case IsEscape(err):
		return staging.Wrap(staging.Forbidden, escape, err)
	case missing(err):
		return staging.Wrap(staging.Rejected, missingText, err)
	case errors.Is(err, fs.ErrPermission):
		return staging.Wrap(staging.Forbidden, "Permission denied", err)
	}
	return staging.Wrap(staging.Internal, "Storage error", err)
}

// IsEscape reports whether err is os.Root refusing a path that leaves the
// root (through '..' or a symlink), however deeply it is wrapped. The os
// package does not export that error, so it is recognised by its text; a
// test pins the behaviour.
func IsEscape(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e.Error() == "path escapes from parent" {
			return true
		}
	}
	return false
}

// Temporary files and directories are named ".skao-staging-<operation id>.tmp"
// in the target folder, so a sweep can find them and tell whose they are.
// The expression is compiled when first needed, not at every start.
var tempPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^\.skao-staging-([0-9a-f-]{36})\.tmp$`) })

// TempName is the temporary name for an operation's output.
func TempName(operationID string) string { return ".skao-staging-" + operationID + ".tmp" }

// IsTemp reports whether name is a temporary name.
func IsTemp(name string) bool { return tempPattern().MatchString(name) }

// TempOperation returns the operation id in a temporary name, or "".
func TempOperation(name string) string {
	if m := tempPattern().FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return ""
}
