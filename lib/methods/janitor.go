package methods

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"time"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// Janitor cleans up after replicas that died mid-staging. Every lease it
// marks operations without a heartbeat as failed (releasing their target
// locks). Once at start it walks the user areas for temporary outputs and
// removes each as soon as its operation is no longer alive: at once for a
// finished or unknown operation, after the lease for one whose replica died.
// Temporary names carry the operation id, so a live copy of another replica
// is never touched.
func Janitor(ctx context.Context, svc *staging.Service, st *storage.Storage, logger *slog.Logger) {
	lease := svc.Lease
	if lease <= 0 {
		lease = 15 * time.Second
	}
	var temps []string
	fs.WalkDir(st.TargetRoot().FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if ctx.Err() != nil {
			return fs.SkipAll
		}
		if err != nil {
			return nil
		}
		if storage.IsTemp(d.Name()) {
			temps = append(temps, p)
			if d.IsDir() {
				return fs.SkipDir
			}
		}
		return nil
	})
	tick := time.NewTicker(lease / 3)
	defer tick.Stop()
	for {
		if n, err := svc.Sweep(ctx); err != nil {
			logger.Warn("sweep interrupted operations", "error", err)
		} else if n > 0 {
			logger.Info("marked interrupted operations as failed", "count", n)
		}
		temps = removeDead(ctx, svc, st, temps, logger)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// removeDead removes the temporary outputs whose operations are not alive
// and returns the others.
func removeDead(ctx context.Context, svc *staging.Service, st *storage.Storage, temps []string, logger *slog.Logger) []string {
	var keep []string
	for _, p := range temps {
		op, err := svc.Store.Get(ctx, storage.TempOperation(path.Base(p)))
		if err != nil && !errors.Is(err, staging.ErrNotFound) {
			keep = append(keep, p)
			continue
		}
		if err == nil && svc.Alive(op) {
			keep = append(keep, p)
			continue
		}
		dir, err := st.TargetRoot().OpenRoot(path.Dir(p))
		if err == nil {
			err = RemoveTemp(dir, path.Base(p))
			dir.Close()
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			logger.Warn("remove leftover temporary output", "path", p, "error", err)
			continue
		}
		logger.Info("removed leftover temporary output", "path", p)
	}
	return keep
}
