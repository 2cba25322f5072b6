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
	"github.com/ska-telescope/skao-staging-service/lib/eventauth"
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
	// Senders verifies who sent an event (EVENT_AUTH); nil or mode none
	// checks no sender.
	Senders *eventauth.Verifier
	// Auth establishes the user of an event that carries no sender
	// credential but the user's own token (AUTH_MODE). With UsersMaySend
	// false (AUTH_MODE=none) and senders checked, such events are refused.
	Auth         auth.Authenticator
	UsersMaySend bool
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
	// Its source and id make a redelivery known: without them (which the
	// SDK's decoder lets through) each delivery would be a new request.
	if err := ev.Validate(); err != nil {
		httpx.Error(w, staging.Wrap(staging.Invalid, "Not a valid CloudEvent: "+err.Error(), err))
		return
	}
	// The event's traceparent extension continues its sender's trace.
	ctx, span := telemetry.StartReceive(r.Context(), ev)
	defer span.End()
	if handle, ok := rc.Handlers[ev.Type()]; ok {
		caller, err := rc.caller(ctx, r, ev, "")
		if err != nil {
			httpx.Error(w, err)
			return
		}
		answer, err := handle(ctx, caller, ev)
		rc.answer(w, r.WithContext(ctx), answer, err)
		return
	}
	req, err := DecodeRequest(ev)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	caller, err := rc.caller(ctx, r, ev, req.JupyterToken)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	// A broker that stops waiting delivers again: the run goes on meanwhile.
	out, err := rc.Service.Handle(ctx, caller, req, staging.Options{Detach: true})
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

// caller establishes who sends ev: a sender verified by EVENT_AUTH acts for
// any user (it is trusted to say whose request it carries); an event with
// no sender credential is a user's own request, established from their
// token (AUTH_MODE) as over HTTP.
func (rc *Receiver) caller(ctx context.Context, r *http.Request, ev *cloudevents.Event, userToken string) (staging.Caller, error) {
	if rc.Senders != nil && rc.Senders.Mode() != eventauth.ModeNone {
		sender, err := rc.Senders.Verify(ctx, r.Header, ev)
		switch {
		case err == nil:
			return staging.Caller{Name: "sender:" + sender.Subject, Admin: true}, nil
		case errors.Is(err, eventauth.ErrNoCredentials) && rc.UsersMaySend:
		case errors.Is(err, eventauth.ErrNoCredentials):
			return staging.Caller{}, staging.Errorf(staging.Unauthenticated, "Events must come from an authorized sender (EVENT_AUTH=%s)", rc.Senders.Mode())
		case errors.Is(err, eventauth.ErrUnavailable):
			return staging.Caller{}, staging.Wrap(staging.Unavailable, "Cannot check the event's sender: its issuer is unreachable", err)
		case errors.Is(err, eventauth.ErrStale):
			// Signed by a holder of the secret, but not now: a replay of
			// a captured event, or a sender whose clock is off.
			rc.Logger.WarnContext(ctx, "event refused: not current", "type", ev.Type(), "source", ev.Source(), "id", ev.ID(),
				"time", ev.Time(), "error", err)
			return staging.Caller{}, staging.Wrap(staging.Unauthenticated,
				"The event's time is missing or outside the accepted window (EVENT_MAX_AGE)", err)
		case errors.Is(err, eventauth.ErrForbidden):
			rc.Logger.WarnContext(ctx, "event refused", "sender", sender.Subject, "type", ev.Type(), "source", ev.Source())
			return staging.Caller{}, staging.Wrap(staging.Forbidden, "The event's sender may not send "+ev.Type(), err)
		default:
			return staging.Caller{}, staging.Wrap(staging.Unauthenticated, "The event's sender is not authenticated", err)
		}
	}
	return rc.Auth.Caller(ctx, auth.Token(r, userToken))
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
