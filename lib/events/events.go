// Package events is the CloudEvents door shared by the functions: it turns
// an org.skao.staging.request event (binary or structured mode, the way a
// Knative Trigger delivers) into a staging request and answers with an
// org.skao.staging.completed reply event, or a 4xx/5xx with a detail so a
// broker retries only what is worth retrying.
package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/telemetry"
)

// Event types and the extension attribute Triggers filter on.
const (
	TypeRequest   = "org.skao.staging.request"
	TypeCompleted = "org.skao.staging.completed"
	TypeFailed    = "org.skao.staging.failed"
	ExtMethod     = "stagingmethod"
)

// RequestData is the data of a request event.
type RequestData struct {
	Method             string `json:"method"`
	Username           string `json:"username"`
	LocalPathOnStorage string `json:"local_path_on_storage"`
	RelativePath       string `json:"relative_path"`
	JupyterToken       string `json:"jupyter_token,omitempty"`
	// DID is a Rucio data identifier to stage instead of a path.
	DID string `json:"did,omitempty"`
	// OperationID is set when the event carries an async request whose
	// pending operation it completes.
	OperationID string `json:"operation_id,omitempty"`
}

// ReplyData is the data of a completed (or failed) event.
type ReplyData struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	Message      string `json:"message,omitempty"`
	Detail       string `json:"detail,omitempty"`
	Method       string `json:"method"`
	Username     string `json:"username"`
	RelativePath string `json:"relative_path"`
}

// Receiver answers request events by staging them.
type Receiver struct {
	Service *staging.Service
	Source  string // the CloudEvents source of replies, e.g. /skao/staging/stage
	Logger  *slog.Logger
	// Handlers take event types other than org.skao.staging.request. What a
	// handler returns is the answer: a reply event, or a value sent as JSON.
	Handlers map[string]func(ctx context.Context, ev *cloudevents.Event) (any, error)
	// Auth checks the caller of a staging request (AUTH_MODE); nil allows all.
	Auth *auth.Authorizer
}

func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, httpx.MaxBody)
	ev, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		status := http.StatusUnprocessableEntity
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		httpx.Error(w, staging.Wrap(status, "Not a valid CloudEvent: "+err.Error(), err))
		return
	}
	// The event's traceparent extension continues its sender's trace.
	ctx, span := telemetry.StartReceive(r.Context(), ev)
	defer span.End()
	r = r.WithContext(ctx)
	if handle, ok := rc.Handlers[ev.Type()]; ok {
		answer, err := handle(r.Context(), ev)
		rc.answer(w, r, answer, err)
		return
	}
	req, err := Decode(ev)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	if req.Method == "direct_download" {
		httpx.Error(w, staging.Errorf(http.StatusUnprocessableEntity, "direct_download streams to a client and cannot be requested by an event"))
		return
	}
	if err := rc.Auth.Authorize(r.Context(), auth.Token(r, req.JupyterToken), req.Username); err != nil {
		httpx.Error(w, err)
		return
	}
	req.CallerToken = auth.Token(r, "")
	out, err := rc.Service.Stage(r.Context(), *req)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	if out.Waiting {
		// Waits for its DID's replica: accepted, the outcome follows as an event.
		httpx.JSON(w, http.StatusAccepted, map[string]string{"status": "pending", "id": out.Operation.ID})
		return
	}
	reply := Reply(rc.Source, out.Operation, nil)
	telemetry.InjectEvent(r.Context(), &reply)
	if err := cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(&reply), http.StatusOK, w); err != nil {
		rc.Logger.Error("write reply event", "operation", out.Operation.ID, "error", err)
	}
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

// Decode checks a request event and turns it into a staging request keyed
// by the event's source and id.
func Decode(ev *cloudevents.Event) (*staging.Request, error) {
	if ev.Type() != TypeRequest {
		return nil, staging.Errorf(http.StatusBadRequest, "Unsupported event type %q: want %s", ev.Type(), TypeRequest)
	}
	var d RequestData
	if err := ev.DataAs(&d); err != nil {
		return nil, staging.Wrap(http.StatusUnprocessableEntity, "Malformed event data: "+err.Error(), err)
	}
	if d.Method == "" {
		return nil, staging.Errorf(http.StatusUnprocessableEntity, "method is required in the event data")
	}
	if ext, ok := ev.Extensions()[ExtMethod]; ok && fmt.Sprint(ext) != d.Method {
		return nil, staging.Errorf(http.StatusUnprocessableEntity, "Extension %s=%v does not match method %s", ExtMethod, ext, d.Method)
	}
	req := &staging.Request{Method: d.Method, Username: d.Username, Source: d.LocalPathOnStorage,
		Target: d.RelativePath, JupyterToken: d.JupyterToken, OperationID: d.OperationID,
		EventSource: ev.Source(), EventID: ev.ID(), DID: d.DID}
	if d.OperationID == "" {
		req.EventKey = staging.EventKey(ev.Source(), ev.ID())
	}
	return req, nil
}

// Reply is the event that reports an operation's outcome. Its id is derived
// from the operation, so a replayed outcome is the same event.
func Reply(source string, op *staging.Operation, err error) cloudevents.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(op.ID + "/" + string(op.Status))
	ev.SetSource(source)
	ev.SetSubject(op.ID)
	ev.SetType(TypeCompleted)
	data := ReplyData{ID: op.ID, Status: string(op.Status), Message: op.Message,
		Method: op.Method, Username: op.Username, RelativePath: op.RelativePath}
	if op.Status == staging.StatusFailed {
		ev.SetType(TypeFailed)
		data.Detail = op.ErrorReason
	}
	ev.SetData(cloudevents.ApplicationJSON, data)
	return ev
}

// NewRequest is the event that hands a pending operation to whatever
// receives K_SINK's events (async staging).
func NewRequest(source string, op *staging.Operation, req staging.Request) cloudevents.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(op.ID)
	ev.SetSource(source)
	ev.SetType(TypeRequest)
	ev.SetExtension(ExtMethod, req.Method)
	ev.SetData(cloudevents.ApplicationJSON, RequestData{Method: req.Method, Username: req.Username,
		LocalPathOnStorage: req.Source, RelativePath: req.Target, JupyterToken: req.JupyterToken, OperationID: op.ID})
	return ev
}

// Sender sends events to a sink URL (K_SINK).
type Sender struct {
	client cloudevents.Client
	sink   string
}

// NewSender returns a Sender for sink.
func NewSender(sink string) (*Sender, error) {
	c, err := cloudevents.NewClientHTTP(cehttp.WithRoundTripper(telemetry.Transport(http.DefaultTransport)))
	if err != nil {
		return nil, fmt.Errorf("cloudevents client: %w", err)
	}
	return &Sender{client: c, sink: sink}, nil
}

// Send delivers ev and reports an error unless the sink acknowledged it.
// The event carries the send span in its traceparent extension.
func (s *Sender) Send(ctx context.Context, ev cloudevents.Event) (err error) {
	ctx, span := telemetry.StartSend(ctx, &ev)
	defer func() { telemetry.End(span, err) }()
	res := s.client.Send(cloudevents.ContextWithTarget(ctx, s.sink), ev)
	if !cloudevents.IsACK(res) {
		return fmt.Errorf("send %s to %s: %w", ev.Type(), s.sink, res)
	}
	return nil
}
