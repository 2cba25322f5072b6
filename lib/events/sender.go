package events

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/telemetry"
)

// Sender sends events to a sink URL (K_SINK, a broker), with this
// function's credentials.
type Sender struct {
	client cloudevents.Client
	sink   string
	source string // the CloudEvents source of what this function sends
	creds  *Credentials
	logger *slog.Logger
}

// NewSender returns a Sender to sink whose events come from source and
// carry creds (nil: none).
func NewSender(sink, source string, creds *Credentials, logger *slog.Logger) (*Sender, error) {
	c, err := cloudevents.NewClientHTTP(cehttp.WithRoundTripper(telemetry.Transport(http.DefaultTransport)))
	if err != nil {
		return nil, fmt.Errorf("cloudevents client: %w", err)
	}
	return &Sender{client: c, sink: sink, source: source, creds: creds, logger: logger}, nil
}

// Send delivers ev and reports an error unless the sink acknowledged it.
// The event carries the send span in its traceparent extension.
func (s *Sender) Send(ctx context.Context, ev cloudevents.Event) (err error) {
	ctx, span := telemetry.StartSend(ctx, &ev)
	defer func() { telemetry.End(span, err) }()
	if err := s.creds.sign(&ev); err != nil {
		return fmt.Errorf("sign %s: %w", ev.Type(), err)
	}
	h := http.Header{}
	if err := s.creds.header(h); err != nil {
		return fmt.Errorf("send %s: read EVENT_TOKEN_FILE: %w", ev.Type(), err)
	}
	if len(h) > 0 {
		ctx = cehttp.WithCustomHeader(ctx, h)
	}
	res := s.client.Send(cloudevents.ContextWithTarget(ctx, s.sink), ev)
	if !cloudevents.IsACK(res) {
		return fmt.Errorf("send %s to %s: %w", ev.Type(), s.sink, res)
	}
	return nil
}

// Handoff implements staging.Handoff: the pending request goes to the
// broker as a request event, which a Trigger delivers to whichever replica
// of the function that runs its method.
func (s *Sender) Handoff(ctx context.Context, req *staging.Request) error {
	// A user's JupyterHub token never goes through the broker, which keeps
	// events (and may log the ones it cannot deliver): the function that
	// runs the request uses its own hub token (JUPYTERHUB_API_TOKEN).
	r := *req
	r.JupyterToken = ""
	ev, err := NewRequest(s.source, &r)
	if err != nil {
		return err
	}
	return s.Send(ctx, ev)
}

// Notify implements staging.Notifier: the outcome goes to the broker as a
// completed or failed event (subject: the operation id).
func (s *Sender) Notify(ctx context.Context, op *staging.Operation) {
	if err := s.Send(ctx, Reply(s.source, op)); err != nil {
		s.logger.WarnContext(ctx, "send outcome event", "operation", op.ID, "error", err)
	}
}
