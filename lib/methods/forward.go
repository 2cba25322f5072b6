package methods

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"

	staging "github.com/ska-telescope/skao-staging-service/lib"
	"github.com/ska-telescope/skao-staging-service/lib/events"
)

// Forward is a method that another function runs: the request is handed to
// it at URL as an org.skao.staging.request event (binary mode, extension
// stagingmethod) and its answer relayed. That function records the
// operation; the two share the database, so /operations shows it here too.
type Forward struct {
	Method string // the method handed on, e.g. jupyter_copy
	URL    string // the function that runs it; "" answers 503
	// Source is the CloudEvents source of requests that did not come in as
	// events (HTTP), e.g. /skao/staging/stage.
	Source string
	Client *http.Client // nil: a client without a timeout (the request's context bounds it)
}

func (f Forward) Name() string { return f.Method }

// Prepare is never called for a Forwarder; it refuses, to be safe.
func (f Forward) Prepare(context.Context, *staging.Request) (*staging.Plan, error) {
	return nil, staging.Errorf(http.StatusInternalServerError, "%s is run by another function", f.Method)
}

// Forward hands req on and relays the answer. A request that came in as an
// event keeps its source and id, so the other function's redelivery check
// covers redeliveries to this one.
func (f Forward) Forward(ctx context.Context, req *staging.Request) (*staging.Outcome, error) {
	if f.URL == "" {
		return nil, staging.Errorf(http.StatusServiceUnavailable, "%s is not available here: the function that runs it is not configured", f.Method)
	}
	ev := cloudevents.NewEvent()
	if req.EventID != "" && req.EventSource != "" {
		ev.SetID(req.EventID)
		ev.SetSource(req.EventSource)
	} else {
		ev.SetID(uuid.Must(uuid.NewV7()).String())
		ev.SetSource(f.Source)
	}
	ev.SetType(events.TypeRequest)
	ev.SetExtension(events.ExtMethod, req.Method)
	if err := ev.SetData(cloudevents.ApplicationJSON, events.RequestData{Method: req.Method, Username: req.Username,
		LocalPathOnStorage: req.Source, RelativePath: req.Target, JupyterToken: req.JupyterToken,
		DID: req.DID, OperationID: req.OperationID}); err != nil {
		return nil, staging.Wrap(http.StatusInternalServerError, "Cannot encode the request event", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL, nil)
	if err != nil {
		return nil, staging.Wrap(http.StatusInternalServerError, "Cannot hand the request on", err)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ev), hreq); err != nil {
		return nil, staging.Wrap(http.StatusInternalServerError, "Cannot encode the request event", err)
	}
	if req.CallerToken != "" {
		hreq.Header.Set("Authorization", "token "+req.CallerToken)
	}
	client := f.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(hreq)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, staging.Wrap(http.StatusServiceUnavailable, "Gave up waiting for the function that runs "+f.Method, err)
		}
		return nil, staging.Wrap(http.StatusServiceUnavailable, "The function that runs "+f.Method+" is unreachable", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, relayError(resp, f.Method)
	}
	reply, err := cehttp.NewEventFromHTTPResponse(resp)
	if err != nil {
		return nil, staging.Wrap(http.StatusBadGateway, "The function that runs "+f.Method+" answered without a reply event", err)
	}
	var d events.ReplyData
	if err := reply.DataAs(&d); err != nil || d.ID == "" {
		return nil, staging.Errorf(http.StatusBadGateway, "The function that runs %s answered with a malformed reply event", f.Method)
	}
	now := time.Now().UTC()
	op := &staging.Operation{ID: d.ID, Method: d.Method, Username: d.Username, RelativePath: d.RelativePath,
		LocalPathOnStorage: req.Source, Status: staging.Status(d.Status), Message: d.Message,
		ErrorReason: d.Detail, Code: http.StatusOK, CreatedAt: now, UpdatedAt: now}
	if op.Status == staging.StatusFailed {
		return &staging.Outcome{Operation: op}, staging.Errorf(http.StatusInternalServerError, "%s", d.Detail)
	}
	return &staging.Outcome{Operation: op}, nil
}

// relayError turns the other function's {"detail"} answer into the same
// error here.
func relayError(resp *http.Response, method string) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var d struct {
		Detail string `json:"detail"`
	}
	if json.Unmarshal(b, &d) == nil && d.Detail != "" {
		return staging.Errorf(resp.StatusCode, "%s", d.Detail)
	}
	status := resp.StatusCode
	if status < 400 {
		status = http.StatusBadGateway
	}
	return staging.Errorf(status, "The function that runs %s answered %d: %s", method, resp.StatusCode,
		strings.TrimSpace(fmt.Sprintf("%.200s", b)))
}
