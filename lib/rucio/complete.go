package rucio

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/storage"
)

// TypeTransferDone is the CloudEvents type of Rucio's transfer-done
// messages as a Knative source or broker carries them.
const TypeTransferDone = "io.rucio.transfer-done"

// RSE is the site's deterministic Rucio Storage Element as mounted here.
type RSE struct {
	Name    string // RUCIO_RSE
	Root    string // RUCIO_RSE_ROOT: where the RSE is mounted, under the source storage
	Prefix  string // RUCIO_RSE_PREFIX: the replica URL prefix that Root stands for
	Storage *storage.Storage
}

// Locate implements staging.DIDLocator: the replica's path under the RSE
// root by the deterministic layout, and whether it is there.
func (r *RSE) Locate(did string) (string, bool, error) {
	d, err := ParseDID(did)
	if err != nil {
		return "", false, err
	}
	return r.exists(filepath.Join(r.Root, DeterministicPath(d)))
}

// replicaPath is where a transfer put the replica: dst-url mapped through
// RUCIO_RSE_PREFIX, else the deterministic layout.
func (r *RSE) replicaPath(td *TransferDone) (string, error) {
	if r.Prefix != "" && strings.HasPrefix(td.DstURL, r.Prefix) {
		rel := strings.TrimPrefix(strings.TrimPrefix(td.DstURL, r.Prefix), "/")
		if !filepath.IsLocal(rel) {
			return "", staging.Errorf(http.StatusUnprocessableEntity, "dst-url %q leaves the RSE root", td.DstURL)
		}
		return filepath.Join(r.Root, rel), nil
	}
	return filepath.Join(r.Root, DeterministicPath(td.DID())), nil
}

func (r *RSE) exists(path string) (string, bool, error) {
	_, err := r.Storage.Source(path)
	if err == nil {
		return path, true, nil
	}
	var se *staging.Error
	if errors.As(err, &se) && se.Status == http.StatusBadRequest && errors.Is(err, fs.ErrNotExist) {
		return path, false, nil
	}
	return "", false, err
}

// Completer finishes the requests that wait for a DID's replica when Rucio
// reports its transfer to the local RSE, and fails those that waited too long.
// Outcomes leave as org.skao.staging.completed or .failed events through
// Notify (K_SINK), so a notifier can tell the user.
type Completer struct {
	Service *staging.Service
	RSE     *RSE
	Source  string // CloudEvents source of the outcome events
	Notify  func(ctx context.Context, ev cloudevents.Event) error
	Reply   func(source string, op *staging.Operation) cloudevents.Event
	Logger  *slog.Logger
}

// Result summarises what a transfer-done event did.
type Result struct {
	Status     string   `json:"status"` // completed, failed or ignored
	Reason     string   `json:"reason,omitempty"`
	DID        string   `json:"did"`
	Operations []string `json:"operations,omitempty"`
}

// HandleEvent completes the requests waiting for the event's DID. Events
// for other RSEs or DIDs nobody waits for are acknowledged and ignored, so a
// redelivery (nobody waits any more) has no second effect.
func (c *Completer) HandleEvent(ctx context.Context, ev *cloudevents.Event) (any, error) {
	td, err := ParseTransferDone(ev.Data())
	if err != nil {
		return nil, err
	}
	did := td.DID().String()
	if td.DstRSE != c.RSE.Name {
		return Result{Status: "ignored", Reason: "transfer to another RSE: " + td.DstRSE, DID: did}, nil
	}
	waiting, err := c.Service.Store.PendingByDID(ctx, did)
	if err != nil {
		return nil, staging.Unavailable(err)
	}
	if len(waiting) == 0 {
		return Result{Status: "ignored", Reason: "no request waits for " + did, DID: did}, nil
	}
	path, err := c.RSE.replicaPath(td)
	if err != nil {
		return nil, err
	}
	if err := c.verify(td, path); err != nil {
		var se *staging.Error
		if errors.As(err, &se) && se.Status == http.StatusServiceUnavailable {
			return nil, err // not visible here yet: let the broker retry
		}
		ids := c.fail(ctx, waiting, err)
		_, detail := staging.StatusOf(err)
		return Result{Status: "failed", Reason: detail, DID: did, Operations: ids}, nil
	}
	res := Result{Status: "completed", DID: did}
	for _, op := range waiting {
		out, err := c.Service.Stage(ctx, staging.Request{Method: op.Method, Username: op.Username,
			Target: op.RelativePath, Source: path, DID: did, OperationID: op.ID})
		if out == nil || out.Operation == nil {
			if staging.Transient(err) {
				return nil, err // the store is down: retry the event
			}
			continue
		}
		res.Operations = append(res.Operations, out.Operation.ID)
		if !out.Replayed {
			c.notify(ctx, out.Operation)
		}
	}
	return res, nil
}

// verify checks the replica against the transfer's size and checksum.
func (c *Completer) verify(td *TransferDone, path string) error {
	src, err := c.RSE.Storage.Source(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return staging.Wrap(http.StatusServiceUnavailable, "Replica of "+td.DID().String()+" is not visible yet at "+path, err)
		}
		return err
	}
	if !src.Info.Mode().IsRegular() {
		return staging.Errorf(http.StatusConflict, "Replica of %s is not a file: %s", td.DID(), path)
	}
	f, err := c.RSE.Storage.SourceRoot().Open(src.Rel)
	if err != nil {
		return staging.Wrap(http.StatusInternalServerError, "Cannot open the replica of "+td.DID().String(), err)
	}
	defer f.Close()
	return td.Verify(f, src.Info.Size())
}

// fail records waiting operations as failed with cause, each once.
func (c *Completer) fail(ctx context.Context, ops []staging.Operation, cause error) []string {
	var ids []string
	for i := range ops {
		op := &ops[i]
		claimed, err := c.Service.Store.Claim(ctx, op.ID, "", time.Now().UTC())
		if err != nil || !claimed {
			continue // someone else finished it
		}
		if err := c.Service.Fail(ctx, op, cause); err != nil {
			c.Logger.ErrorContext(ctx, "record failed operation", "operation", op.ID, "error", err)
			continue
		}
		ids = append(ids, op.ID)
		c.notify(ctx, op)
	}
	return ids
}

// Expire fails the requests that have waited longer than ttl.
func (c *Completer) Expire(ctx context.Context, ttl time.Duration) (int, error) {
	ops, err := c.Service.Store.PendingBefore(ctx, time.Now().Add(-ttl))
	if err != nil {
		return 0, err
	}
	for _, op := range ops {
		cause := staging.Errorf(http.StatusGatewayTimeout, "Expired: the replica of %s did not arrive within %s", op.DID, ttl)
		c.fail(ctx, []staging.Operation{op}, cause)
	}
	return len(ops), nil
}

// ExpireEvery runs Expire until ctx ends.
func (c *Completer) ExpireEvery(ctx context.Context, ttl time.Duration) {
	every := min(max(ttl/4, 50*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := c.Expire(ctx, ttl); err != nil {
			c.Logger.WarnContext(ctx, "expire pending requests", "error", err)
		} else if n > 0 {
			c.Logger.InfoContext(ctx, "expired pending requests", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Completer) notify(ctx context.Context, op *staging.Operation) {
	if c.Notify == nil {
		return
	}
	if err := c.Notify(ctx, c.Reply(c.Source, op)); err != nil {
		c.Logger.WarnContext(ctx, "send outcome event", "operation", op.ID, "error", fmt.Sprint(err))
	}
}
