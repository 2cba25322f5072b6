package methods

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"path/filepath"
	"time"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// Janitor cleans up after replicas that died mid-staging: every third of a
// lease, from start until ctx ends, it sweeps the operations without a
// heartbeat (Service.Sweep), which removes their temporary outputs through
// Service.Cleanup and records them as failed. It reads the store, never
// walks the storage: a start stays cheap however large the user areas are.
func Janitor(ctx context.Context, svc *staging.Service, logger *slog.Logger) {
	lease := svc.Lease
	if lease <= 0 {
		lease = 15 * time.Second
	}
	tick := time.NewTicker(lease / 3)
	defer tick.Stop()
	for {
		if n, err := svc.Sweep(ctx); err != nil {
			logger.WarnContext(ctx, "sweep interrupted operations", "error", err)
		} else if n > 0 {
			logger.InfoContext(ctx, "marked interrupted operations as failed", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// TempCleaner is a Service.Cleanup for local_copy: it removes the temporary
// output a dead operation left in its target folder, where the operation's
// record says it is (user area, folder of relative_path, temporary name).
func TempCleaner(st *storage.Storage, logger *slog.Logger) func(ctx context.Context, op *staging.Operation) {
	return func(ctx context.Context, op *staging.Operation) {
		if op.Method != (LocalCopy{}).Name() {
			return
		}
		dir, err := st.TargetRoot().OpenRoot(filepath.Join(op.Username, filepath.Dir(op.RelativePath)))
		if err != nil {
			return // no folder, no temporary output
		}
		defer dir.Close()
		name := storage.TempName(op.ID)
		if _, err := dir.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err := RemoveTemp(dir, name); err != nil {
			logger.WarnContext(ctx, "remove leftover temporary output", "operation", op.ID, "error", err)
			return
		}
		logger.InfoContext(ctx, "removed leftover temporary output", "operation", op.ID,
			"path", filepath.Join(op.Username, filepath.Dir(op.RelativePath), name))
	}
}
