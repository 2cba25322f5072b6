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
			f, err := m.Storage.SourceRoot().Open(src.Rel)
			if err != nil {
				return nil, sourceError(err, req.Source)
			}
			info, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, sourceError(err, req.Source)
			}
			if !info.Mode().IsRegular() {
				f.Close()
				return nil, sourceError(fs.ErrInvalid, req.Source)
			}
			job.SetTotal(info.Size())
			return &staging.Result{Download: &staging.Download{Name: name, Size: info.Size(),
				ModTime: info.ModTime(), File: f}}, nil
		}
		tree, err := m.Storage.SourceRoot().OpenRoot(src.Rel)
		if err != nil {
			return nil, sourceError(err, req.Source)
		}
		entries, total, err := walk(tree, req.Source)
		if err != nil {
			tree.Close()
			return nil, err
		}
		job.SetTotal(total)
		write := func(ctx context.Context, w io.Writer) error {
			defer tree.Close()
			return writeTar(ctx, w, tree, name, entries)
		}
		return &staging.Result{Download: &staging.Download{Name: name + ".tar", Size: -1,
			ModTime: src.Info.ModTime(), WriteTo: write}}, nil
	}
	plan := &staging.Plan{Run: run}
	if src.Info.IsDir() {
		// The tree's root, the file being sent, the two folders os.Root
		// holds at most while it opens a path inside the tree, and the
		// client's connection. (A file holds the default: itself, a
		// folder on the way to it, the connection.)
		plan.Files = 5
	}
	return plan, nil
}

// writeTar streams entries as a tar archive under the folder name prefix.
func writeTar(ctx context.Context, w io.Writer, tree *os.Root, prefix string, entries []entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := path.Join(prefix, e.rel)
		if e.dir {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: e.mod}); err != nil {
				return err
			}
			continue
		}
		f, err := tree.Open(e.rel)
		if err != nil {
			return err
		}
		err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: e.size, Mode: 0o644, ModTime: e.mod})
		if err == nil {
			_, err = io.Copy(tw, io.LimitReader(f, e.size))
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}
