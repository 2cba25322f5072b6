package methods

import (
	"archive/tar"
	"context"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// DirectDownload sends the source to the client: a file as it is (the door
// serves Range requests), a directory as a tar stream built on the fly.
type DirectDownload struct {
	Storage *storage.Storage
	// MaxDepth bounds how many folders deep a tree may go (MAX_PATH_DEPTH).
	MaxDepth int
}

func (DirectDownload) Name() string { return "direct_download" }

// Traits: the door streams the content to its client.
func (DirectDownload) Traits() staging.Traits {
	return staging.Traits{Function: "stage", Streams: true}
}

func (m DirectDownload) Prepare(ctx context.Context, req *staging.Request) (*staging.Plan, error) {
	src, err := m.Storage.Source(req.Source)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(src.Path)
	run := func(ctx context.Context, job *staging.Job) (*staging.Result, error) {
		if !src.Info.IsDir() {
			f, info, err := storage.OpenFile(m.Storage.SourceRoot(), src.Rel)
			if err != nil {
				return nil, sourceError(err, req.Source)
			}
			job.SetTotal(info.Size())
			return &staging.Result{Download: &staging.Download{Name: name, Size: info.Size(),
				ModTime: info.ModTime(), File: f}}, nil
		}
		tree, err := storage.OpenTree(m.Storage.SourceRoot(), src.Rel)
		if err != nil {
			return nil, sourceError(err, req.Source)
		}
		// The tree is checked before the answer starts, so what cannot be
		// sent (a FIFO, a device, a link to a folder, too deep) is a 400,
		// not a cut-off stream; the check reads the folders' listings and
		// looks where links lead, it opens no file.
		err = checkTree(ctx, tree, m.MaxDepth)
		tree.Close()
		if err != nil {
			return nil, walkError(err, req.Source)
		}
		// The stream opens the tree again, so nothing stays open for an
		// answer that sends no body (HEAD); each file is checked again on
		// its handle as it is sent.
		write := func(ctx context.Context, w io.Writer) error {
			tree, err := storage.OpenTree(m.Storage.SourceRoot(), src.Rel)
			if err != nil {
				return walkError(err, req.Source)
			}
			defer tree.Close()
			return writeTar(ctx, w, tree, name, m.MaxDepth)
		}
		return &staging.Result{Download: &staging.Download{Name: name + ".tar", Size: -1,
			ModTime: src.Info.ModTime(), WriteTo: write}}, nil
	}
	plan := &staging.Plan{Run: run}
	if src.Info.IsDir() {
		// The walk holds one folder per level (at most MaxDepth below the
		// top), besides the tree's root, the file being sent and the
		// client's connection. (A file holds the default: itself, a folder
		// on the way to it, the connection.)
		plan.Files = walkFiles(m.MaxDepth) + 3
	}
	return plan, nil
}

// checkTree walks a tree and refuses what a tar of it could not hold.
func checkTree(ctx context.Context, tree *os.Root, maxDepth int) error {
	return storage.Walk(ctx, tree, maxDepth, storage.Visitor{
		File: func(f *storage.Folder, name string, link bool) error {
			if !link {
				return nil
			}
			info, err := f.Stat(name)
			if err != nil {
				return &fs.PathError{Op: "stat", Path: path.Join(f.Rel, name), Err: err}
			}
			if !info.Mode().IsRegular() {
				return &fs.PathError{Op: "stat", Path: path.Join(f.Rel, name), Err: unsupportedLink(info)}
			}
			return nil
		},
	})
}

// writeTar streams the tree as a tar archive under the folder name prefix,
// as the walk reaches each entry: what it holds does not grow with the
// tree. Each file is opened and checked on its handle as it is sent.
func writeTar(ctx context.Context, w io.Writer, tree *os.Root, prefix string, maxDepth int) error {
	tw := tar.NewWriter(w)
	err := storage.Walk(ctx, tree, maxDepth, storage.Visitor{
		Folder: func(f *storage.Folder) error {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: path.Join(prefix, f.Rel) + "/",
				Mode: 0o755, ModTime: f.Info.ModTime()})
		},
		File: func(f *storage.Folder, name string, _ bool) error {
			in, info, err := f.Open(name)
			if err != nil {
				return err
			}
			defer in.Close()
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path.Join(prefix, f.Rel, name),
				Size: info.Size(), Mode: 0o644, ModTime: info.ModTime()})
			if err == nil {
				_, err = io.Copy(tw, io.LimitReader(in, info.Size()))
			}
			return err
		},
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
