package main

import (
	"context"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/rucio"
)

// wireRucio enables staging by DID when RUCIO_RSE names the local RSE:
// requests for a DID whose replica is not there wait in the store until an
// io.rucio.transfer-done event completes them, or PENDING_TTL expires them.
func wireRucio(f *function.Function, a *api) {
	c := f.Config
	if c.RucioRSE == "" {
		return
	}
	rse := &rucio.RSE{Name: c.RucioRSE, Root: c.RucioRSERoot, Prefix: c.RucioRSEPrefix, Storage: f.Storage}
	f.Service.DIDs = rse
	completer := &rucio.Completer{Service: f.Service, RSE: rse, Source: source, Logger: f.Logger,
		Reply: func(source string, op *staging.Operation) cloudevents.Event { return events.Reply(source, op, nil) }}
	if a.sender != nil {
		completer.Notify = a.sender.Send
	}
	if a.receiver.Handlers == nil {
		a.receiver.Handlers = map[string]func(context.Context, *cloudevents.Event) (any, error){}
	}
	a.receiver.Handlers[rucio.TypeTransferDone] = completer.HandleEvent
	f.Go(func(ctx context.Context) { completer.ExpireEvery(ctx, c.PendingTTL) })
}
