package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Peer is another function that runs some methods (staging.Peer): a
// recorded request is handed to it at URL as a request event carrying its
// operation id, and its answer awaited. It records the outcome in the
// store both functions share.
type Peer struct {
	Name   string // the function, e.g. jupyter
	URL    string
	Source string       // the CloudEvents source of what this function sends
	Creds  *Credentials // this function's own (EVENT_AUTH); nil: none
	Client *http.Client // nil: a client without a timeout (the request's context bounds it)
}

var _ staging.Peer = Peer{}

// Run hands req to the peer and waits for its answer, which it returns
// as an error of the same kind and detail when it is a failure. The
// caller's token goes along, so the peer establishes the same caller.
func (p Peer) Run(ctx context.Context, caller staging.Caller, req *staging.Request) error {
	ev, err := NewRequest(p.Source, req)
	if err == nil {
		err = p.Creds.sign(&ev)
	}
	if err != nil {
		return staging.Wrap(staging.Internal, "Cannot encode the request event", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, nil)
	if err != nil {
		return staging.Wrap(staging.Internal, "Cannot hand the request on", err)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ev), hreq); err != nil {
		return staging.Wrap(staging.Internal, "Cannot encode the request event", err)
	}
	// This function's own credential, when it has one (a signature, or
	// EVENT_TOKEN_FILE's token), says who sends, and the peer trusts it
	// for the user this function established: the user's token stays
	// here. Without one, the caller's token goes along, so the peer
	// establishes the same caller.
	switch {
	case p.Creds != nil && p.Creds.TokenFile != "":
		if err := p.Creds.header(hreq.Header); err != nil {
			return staging.Wrap(staging.Internal, "Cannot read EVENT_TOKEN_FILE", err)
		}
	case p.Creds == nil && caller.Token != "":
		hreq.Header.Set("Authorization", "Bearer "+caller.Token)
	}
	client := p.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(hreq)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return staging.Wrap(staging.Unavailable, "Gave up waiting for the "+p.Name+" function", err)
		}
		return staging.Wrap(staging.Unavailable, "The "+p.Name+" function is unreachable", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	return p.relayError(resp)
}

// relayError turns the peer's {"detail"} answer into the same failure here.
func (p Peer) relayError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var d struct {
		Detail string `json:"detail"`
	}
	kind := httpx.KindOfStatus(resp.StatusCode)
	if resp.StatusCode < 400 {
		kind = staging.Upstream
	}
	if json.Unmarshal(b, &d) == nil && d.Detail != "" && resp.StatusCode >= 400 {
		return staging.Errorf(kind, "%s", d.Detail)
	}
	return staging.Errorf(kind, "The %s function answered %s", p.Name, fmt.Sprint(resp.StatusCode))
}
