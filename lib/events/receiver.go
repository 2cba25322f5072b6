package events

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/telemetry"
)

// Handler handles one event type as caller.
type Handler func(ctx context.Context, caller staging.Caller, ev *cloudevents.Event) (any, error)

// Receiver is the CloudEvents door: it hands request events to the
// service and answers with a reply event, or a 4xx/5xx with a detail, so a
// broker retries only what is worth retrying.
type Receiver struct {
	Service *staging.Service
	Source  string // the CloudEvents source of replies, e.g. /skao/staging/stage
	Logger  *slog.Logger
	// Auth establishes who sends a request (AUTH_MODE).
	Auth auth.Authenticator
	// Handlers take event types other than org.skao.staging.request, as
	// the event's sender. What a handler returns is the answer: a reply
	// event, or a value sent as JSON.
	Handlers map[string]Handler
}

func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, httpx.MaxBody)
	ev, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		kind := staging.Invalid
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			kind = staging.TooLarge
		}
		httpx.Error(w, staging.Wrap(kind, "Not a valid CloudEvent", err))
		return
	}
	// The event's traceparent extension continues its sender's trace.
	ctx, span := telemetry.StartReceive(r.Context(), ev)
	defer span.End()
	if handle, ok := rc.Handlers[ev.Type()]; ok {
		answer, err := handle(ctx, staging.System, ev)
		rc.answer(w, r.WithContext(ctx), answer, err)
		return
	}
	req, err := DecodeRequest(ev)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	caller, err := rc.Auth.Caller(ctx, auth.Token(r, req.JupyterToken))
	if err != nil {
		httpx.Error(w, err)
		return
	}
	out, err := rc.Service.Handle(ctx, caller, req, staging.Options{})
	if err != nil {
		httpx.Error(w, err)
		return
	}
	if out.Pending() {
		// Waits for its DID's replica: accepted, the outcome follows as an event.
		httpx.JSON(w, http.StatusAccepted, map[string]string{"status": "pending", "id": out.Operation.ID})
		return
	}
	reply := Reply(rc.Source, out.Operation)
	telemetry.InjectEvent(ctx, &reply)
	rc.answer(w, r.WithContext(ctx), &reply, nil)
}

// answer writes a handler's outcome: an error's status and detail, a reply
// event in binary mode, or JSON.
func (rc *Receiver) answer(w http.ResponseWriter, r *http.Request, answer any, err error) {
	if err != nil {
		httpx.Error(w, err)
		return
	}
	if ev, ok := answer.(*cloudevents.Event); ok {
		if err := cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(ev), http.StatusOK, w); err != nil {
			rc.Logger.Error("write reply event", "type", ev.Type(), "error", err)
		}
		return
	}
	httpx.JSON(w, http.StatusOK, answer)
}
