package rucio

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
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

// Locate implements staging.DIDLocator: the replica's path, relative to
// the source storage, by the deterministic layout, and whether it is there.
func (r *RSE) Locate(did string) (string, bool, error) {
	d, err := ParseDID(did)
	if err != nil {
		return "", false, err
	}
	return r.exists(r.replicaPath(d))
}

// replicaPath is where the RSE keeps d's replica, relative to the source
// storage: the deterministic layout under RUCIO_RSE_ROOT.
func (r *RSE) replicaPath(d DID) string {
	rel, err := filepath.Rel(r.Storage.SourcePath, filepath.Join(r.Root, DeterministicPath(d)))
	if err != nil || !filepath.IsLocal(rel) {
		return filepath.Join(r.Root, DeterministicPath(d)) // RUCIO_RSE_ROOT is checked to lie under the storage
	}
	return rel
}

// transferPath checks that a transfer's dst-url names the DID's own
// replica: the deterministic path, mapped through RUCIO_RSE_PREFIX when
// the URL has it. A message naming any other file completes nothing.
func (r *RSE) transferPath(td *TransferDone) (string, error) {
	want := r.replicaPath(td.DID())
	if r.Prefix == "" || !strings.HasPrefix(td.DstURL, r.Prefix) {
		return want, nil
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(td.DstURL, r.Prefix), "/")
	got, err := filepath.Rel(r.Storage.SourcePath, filepath.Join(r.Root, filepath.FromSlash(rel)))
	if err != nil || !filepath.IsLocal(rel) || filepath.Clean(got) != filepath.Clean(want) {
		return "", staging.Errorf(staging.Forbidden, "dst-url does not name the replica of %s on %s", td.DID(), r.Name)
	}
	return want, nil
}

func (r *RSE) exists(path string) (string, bool, error) {
	_, err := r.Storage.Source(path)
	if err == nil {
		return path, true, nil
	}
	if k, _ := staging.KindOf(err); k == staging.Rejected && errors.Is(err, fs.ErrNotExist) {
		return path, false, nil
	}
	return "", false, err
}

// Completer is the door of Rucio's transfer-done messages: it completes
// the requests that wait for a DID's replica when Rucio reports its
// transfer to the local RSE. Their outcomes are notified (K_SINK), so a
// notifier can tell the user.
type Completer struct {
	Service *staging.Service
	RSE     *RSE
	Logger  *slog.Logger

	checks checks // of replicas, once per replica and message
}

// Result summarises what a transfer-done event did.
type Result struct {
	Status     string   `json:"status"` // completed, failed or ignored
	Reason     string   `json:"reason,omitempty"`
	DID        string   `json:"did"`
	Operations []string `json:"operations,omitempty"`
}

// HandleEvent completes the requests waiting for the event's DID, as
// caller (the event's sender). Events for other RSEs or DIDs nobody waits
// for are acknowledged and ignored, so a redelivery (nobody waits any
// more) has no second effect.
func (c *Completer) HandleEvent(ctx context.Context, caller staging.Caller, ev *cloudevents.Event) (any, error) {
	td, err := ParseTransferDone(ev.Data())
	if err != nil {
		return nil, err
	}
	did := td.DID().String()
	if td.DstRSE != c.RSE.Name {
		return Result{Status: "ignored", Reason: "transfer to another RSE: " + td.DstRSE, DID: did}, nil
	}
	path, err := c.RSE.transferPath(td)
	if err != nil {
		return nil, err
	}
	done, err := c.Service.Complete(ctx, caller, did, path, func() error { return c.verify(ctx, td, path) })
	if err != nil {
		return nil, err
	}
	res := Result{Status: "completed", DID: did}
	switch {
	case done.Waiting == 0:
		return Result{Status: "ignored", Reason: "no request waits for " + did, DID: did}, nil
	case done.Refused != nil:
		res.Status = "failed"
		_, res.Reason = staging.KindOf(done.Refused)
	}
	for _, op := range done.Operations {
		res.Operations = append(res.Operations, op.ID)
	}
	return res, nil
}

// verify checks the replica against the transfer's size and checksum,
// once for all the deliveries of the message (see checks).
func (c *Completer) verify(ctx context.Context, td *TransferDone, path string) error {
	src, err := c.RSE.Storage.Source(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return staging.Wrap(staging.Unavailable, "Replica of "+td.DID().String()+" is not visible yet at "+path, err)
		}
		return err
	}
	if !src.Info.Mode().IsRegular() {
		return staging.Errorf(staging.Conflict, "Replica of %s is not a file: %s", td.DID(), path)
	}
	key := checkKey{path: src.Rel, size: src.Info.Size(), mtime: src.Info.ModTime().UnixNano(), wantSize: td.Size()}
	if td.ChecksumAdler != nil {
		key.adler = *td.ChecksumAdler
	}
	if td.ChecksumMD5 != nil {
		key.md5 = *td.ChecksumMD5
	}
	return c.checks.run(ctx, key, td.DID().String(), func() error {
		f, info, err := storage.OpenFile(c.RSE.Storage.SourceRoot(), src.Rel)
		if errors.Is(err, storage.ErrUnsupported) {
			return staging.Errorf(staging.Conflict, "Replica of %s is not a file: %s", td.DID(), path)
		}
		if err != nil {
			return staging.Wrap(staging.Internal, "Cannot open the replica of "+td.DID().String(), err)
		}
		defer f.Close()
		return td.Verify(f, info.Size())
	})
}
