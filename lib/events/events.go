// Package events is the CloudEvents side of the service: the one codec of
// staging requests as org.skao.staging.request events (what HTTP items,
// hand-offs and brokers' events all carry), the door that receives events
// (binary or structured mode, as a Knative Trigger delivers) and answers
// with an org.skao.staging.completed reply event, the sender of events to a
// broker (K_SINK) for async hand-offs and outcomes, and the peer that hands
// a recorded request to the function that runs its method.
package events

import (
	"encoding/json"
	"fmt"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Event types and the extension attribute Triggers filter on.
const (
	TypeRequest   = "org.skao.staging.request"
	TypeCompleted = "org.skao.staging.completed"
	TypeFailed    = "org.skao.staging.failed"
	ExtMethod     = "stagingmethod"
)

// requestData is the data of a request event: the request in its wire
// form, plus the operation a hand-off completes.
type requestData struct {
	staging.Request
	OperationID string `json:"operation_id,omitempty"`
}

// NewRequest is the request event for req: a hand-off (req.OperationID
// set) is identified by its operation, any other request by a new id.
func NewRequest(source string, req *staging.Request) (cloudevents.Event, error) {
	ev := cloudevents.NewEvent()
	id := req.OperationID
	if id == "" {
		id = staging.NewID()
	}
	ev.SetID(id)
	ev.SetSource(source)
	ev.SetType(TypeRequest)
	ev.SetExtension(ExtMethod, req.Method)
	if err := ev.SetData(cloudevents.ApplicationJSON, requestData{Request: *req, OperationID: req.OperationID}); err != nil {
		return ev, fmt.Errorf("encode request event: %w", err)
	}
	return ev, nil
}

// DecodeRequest reads a request event into the request it carries, keyed
// by the event's source and id for redeliveries.
func DecodeRequest(ev *cloudevents.Event) (staging.Request, error) {
	if ev.Type() != TypeRequest {
		return staging.Request{}, staging.Errorf(staging.Rejected, "Unsupported event type %q: want %s", ev.Type(), TypeRequest)
	}
	var d requestData
	if err := json.Unmarshal(ev.Data(), &d); err != nil {
		return staging.Request{}, staging.Wrap(staging.Invalid, "Malformed event data: want a JSON object of a staging request", err)
	}
	if ext, ok := ev.Extensions()[ExtMethod]; ok && fmt.Sprint(ext) != d.Method {
		return staging.Request{}, staging.Errorf(staging.Invalid, "Extension %s does not match the method in the event data", ExtMethod)
	}
	req := d.Request
	req.OperationID = d.OperationID
	req.EventSource, req.EventID = ev.Source(), ev.ID()
	return req, nil
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

// Reply is the event that reports an operation's outcome. Its id is derived
// from the operation, so a replayed outcome is the same event.
func Reply(source string, op *staging.Operation) cloudevents.Event {
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
