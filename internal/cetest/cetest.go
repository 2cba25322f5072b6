// Package cetest sends CloudEvents to functions in tests, as a Knative broker
// or Trigger delivers them.
package cetest

import (
	"context"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/lib/events"
)

// RequestEvent is an org.skao.staging.request event as a broker delivers
// it, with the stagingmethod extension Triggers filter on.
func RequestEvent(id string, data events.RequestData) cloudevents.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(id)
	ev.SetSource("/test/broker")
	ev.SetType(events.TypeRequest)
	ev.SetExtension(events.ExtMethod, data.Method)
	ev.SetData(cloudevents.ApplicationJSON, data)
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
