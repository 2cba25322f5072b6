package testenv

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// Tree is a generated tree of many small files, three levels deep:
// top/mid/file, TreeFilesPerDir files in each leaf folder, as many top
// folders as mid folders in each. A million files are 100 × 100 folders of
// 100 files. Every file's content is derived from its name, so a copy or an
// archive of the tree can be checked entry by entry without keeping a list.
type Tree struct {
	Files    int // files in all
	FileSize int // bytes in each
	mids     int // mid folders in each top folder
}

// TreeFilesPerDir is how many files each leaf folder holds.
const TreeFilesPerDir = 100

// NewTree describes a tree of files files of size bytes each (at least
// enough to hold its own name).
func NewTree(files, size int) Tree {
	leaves := (files + TreeFilesPerDir - 1) / TreeFilesPerDir
	return Tree{Files: files, FileSize: size, mids: max(1, int(math.Ceil(math.Sqrt(float64(leaves)))))}
}

// Name is the path of file i relative to the tree's root.
func (t Tree) Name(i int) string {
	leaf := i / TreeFilesPerDir
	return fmt.Sprintf("d%03d/d%03d/f%03d", leaf/t.mids, leaf%t.mids, i%TreeFilesPerDir)
}

// Folders is the number of folders below the tree's root.
func (t Tree) Folders() int {
	leaves := (t.Files + TreeFilesPerDir - 1) / TreeFilesPerDir
	return leaves + (leaves+t.mids-1)/t.mids
}

// Content is what the file named name (relative to the root) holds: its
// name, a newline, then dots up to FileSize.
func (t Tree) Content(name string) []byte {
	b := make([]byte, 0, max(t.FileSize, len(name)+1))
	b = append(append(b, name...), '\n')
	return append(b, bytes.Repeat([]byte{'.'}, max(0, t.FileSize-len(b)))...)
}

// Write makes the tree under root (which may exist) with workers
// goroutines, one leaf folder at a time each; progress, if not nil, is
// called by those goroutines with the number of files written so far after
// each leaf folder.
func (t Tree) Write(root string, workers int, progress func(done int)) error {
	leaves := (t.Files + TreeFilesPerDir - 1) / TreeFilesPerDir
	var (
		next, done atomic.Int64
		wg         sync.WaitGroup
		mu         sync.Mutex
		first      error
	)
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for leaf := int(next.Add(1) - 1); leaf < leaves; leaf = int(next.Add(1) - 1) {
				lo, hi := leaf*TreeFilesPerDir, min((leaf+1)*TreeFilesPerDir, t.Files)
				err := os.MkdirAll(filepath.Join(root, filepath.Dir(t.Name(lo))), 0o755)
				for i := lo; i < hi && err == nil; i++ {
					err = os.WriteFile(filepath.Join(root, t.Name(i)), t.Content(t.Name(i)), 0o644)
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				n := done.Add(int64(hi - lo))
				if progress != nil {
					progress(int(n))
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return fmt.Errorf("write tree: %w", first)
	}
	return nil
}

// RemoveTree removes root and everything under it, read-only folders (as
// staged ones are) included, with workers goroutines each removing one
// folder of the second level at a time.
func RemoveTree(root string, workers int) error {
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	parts, _ := filepath.Glob(filepath.Join(root, "*", "*"))
	work := make(chan string)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if err := os.RemoveAll(p); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, p := range parts {
		work <- p
	}
	close(work)
	wg.Wait()
	if first != nil {
		return fmt.Errorf("remove %s: %w", root, first)
	}
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("remove %s: %w", root, err)
	}
	return nil
}
