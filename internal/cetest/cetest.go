// Package cetest sends CloudEvents to functions in tests, as a Knative broker
// or Trigger delivers them.
package cetest

import (
	"context"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// RequestEvent is an org.skao.staging.request event carrying req as a
// broker delivers it, with the stagingmethod extension Triggers filter on
// (and req.OperationID in its data, as a hand-off carries it).
func RequestEvent(tb testing.TB, id string, req staging.Request) cloudevents.Event {
	tb.Helper()
	ev, err := events.NewRequest("/test/broker", &req)
	if err != nil {
		tb.Fatal(err)
	}
	ev.SetID(id)
	return ev
}

// SendEvent delivers ev as a Knative Trigger would, in binary or structured
// mode, and returns the HTTP status, the reply event (or nil) and the
// protocol's result, which names the error of a non-2xx answer.
func SendEvent(tb testing.TB, url string, ev cloudevents.Event, structured bool) (int, *cloudevents.Event, error) {
	tb.Helper()
	c, err := cloudevents.NewClientHTTP()
	if err != nil {
		tb.Fatal(err)
	}
	ctx := cloudevents.ContextWithTarget(context.Background(), url)
	if structured {
		ctx = cloudevents.WithEncodingStructured(ctx)
	}
	reply, res := c.Request(ctx, ev)
	var httpResult *cehttp.Result
	if !cloudevents.ResultAs(res, &httpResult) {
		tb.Fatalf("no HTTP result: %v", res)
	}
	return httpResult.StatusCode, reply, res
}
