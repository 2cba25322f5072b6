package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// maxBatch is the most items one request may carry.
const maxBatch = 1000

// api is the stage function's HTTP side: each handler decodes its input,
// asks the staging service once, and renders the answer.
type api struct {
	f        *function.Function
	svc      *staging.Service
	auth     auth.Authenticator
	receiver *events.Receiver
}

func (a *api) routes() http.Handler {
	m := httpx.NewMux()
	for _, p := range []string{"/stage_data", "/stage-data"} {
		m.Route(http.MethodPost, p, a.stageData)
		m.Route(http.MethodGet, p, a.download)
	}
	m.Route(http.MethodGet, "/config", a.config)
	m.Route(http.MethodGet, "/config/allowed-methods", a.allowedMethods)
	m.Route(http.MethodGet, "/operations", a.listOperations)
	m.Route(http.MethodGet, "/operations/{id}", a.getOperation)
	if a.f.Config.EnableFileCreator {
		m.Route(http.MethodPost, "/create-file", a.createFile)
	}
	m.Route(http.MethodPost, "/", a.receiver.ServeHTTP)
	a.webRoutes(m) // the page at GET /, /browse, /openapi.json, /docs (web.go)
	return m
}

// caller establishes who sends r: its Authorization header, else the
// token the request carries.
func (a *api) caller(r *http.Request, token string) (staging.Caller, error) {
	return a.auth.Caller(r.Context(), auth.Token(r, token))
}

// stageData is POST /stage_data?method=&username=: one item or a batch,
// now or async (Prefer: respond-async); or, with a form body, a download.
func (a *api) stageData(w http.ResponseWriter, r *http.Request) {
	if isForm(r) {
		a.downloadForm(w, r) // the download link posted with a token (download.go)
		return
	}
	reqs, batch, err := decodeStageRequest(w, r)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	caller, err := a.caller(r, reqs[0].JupyterToken)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	opt := staging.Options{Async: preferAsync(r), Stream: !batch}
	if batch {
		items, err := a.svc.HandleBatch(r.Context(), caller, reqs, opt)
		if err != nil {
			httpx.Error(w, err)
			return
		}
		renderBatch(w, items)
		return
	}
	out, err := a.svc.Handle(r.Context(), caller, reqs[0], opt)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	if out.Download != nil {
		serveDownload(w, r, out)
		return
	}
	renderOutcome(w, out)
}

// decodeStageRequest reads the query (method, username, jupyter_token)
// and the body {"data": item or [items]} into requests, one per item.
func decodeStageRequest(w http.ResponseWriter, r *http.Request) ([]staging.Request, bool, error) {
	var body struct {
		Data json.RawMessage `json:"data"`
	}
	if err := httpx.DecodeJSON(w, r, &body); err != nil {
		return nil, false, err
	}
	q := r.URL.Query()
	reqs, batch, err := decodeItems(body.Data)
	for i := range reqs {
		reqs[i].Method, reqs[i].Username = q.Get("method"), q.Get("username")
		if t := q.Get("jupyter_token"); t != "" {
			reqs[i].JupyterToken = t
		}
	}
	return reqs, batch, err
}

// decodeItems reads data: one object, or an array of 1 to maxBatch, each
// a request in its wire form.
func decodeItems(data json.RawMessage) ([]staging.Request, bool, error) {
	data = bytes.Trim(data, " \t\r\n") // JSON's whitespace, not Unicode's (\v is no JSON)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return nil, false, staging.Errorf(staging.Invalid, "data is required")
	}
	batch := data[0] == '['
	var reqs []staging.Request
	if !batch {
		reqs = make([]staging.Request, 1)
		if err := json.Unmarshal(data, &reqs[0]); err != nil {
			return nil, false, staging.Wrap(staging.Invalid, "data must be an object or an array of objects with string fields", err)
		}
		return reqs, false, nil
	}
	if err := json.Unmarshal(data, &reqs); err != nil {
		return nil, false, staging.Wrap(staging.Invalid, "data must be an object or an array of objects with string fields", err)
	}
	if len(reqs) == 0 || len(reqs) > maxBatch {
		return nil, false, staging.Errorf(staging.Invalid, "data must hold 1 to %d items, not %d", maxBatch, len(reqs))
	}
	return reqs, true, nil
}

// result is the answer to one staging request, alone or in a batch.
type result struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
	Detail  string `json:"detail,omitempty"`
	ID      string `json:"id,omitempty"`
}

// renderOutcome answers a staging that ran (200) or is pending: handed on,
// or waiting for its DID's replica (202, Location of its record).
func renderOutcome(w http.ResponseWriter, out *staging.Outcome) {
	if out.Pending() {
		w.Header().Set("Location", "/operations/"+out.Operation.ID)
		httpx.JSON(w, http.StatusAccepted, result{Status: "pending", ID: out.Operation.ID})
		return
	}
	httpx.JSON(w, http.StatusOK, result{Status: "success", Message: out.Operation.Message, ID: out.Operation.ID})
}

// renderBatch answers a batch in order: 200 when all succeeded, 202 when
// none failed but some wait, 207 else.
func renderBatch(w http.ResponseWriter, items []staging.BatchItem) {
	results := make([]result, len(items))
	failed, pending := 0, 0
	for i, it := range items {
		res := result{Status: "success"}
		if out := it.Outcome; out != nil && out.Operation != nil {
			res.ID, res.Message = out.Operation.ID, out.Operation.Message
			if out.Pending() {
				res.Status = "pending"
				pending++
			}
		}
		if it.Err != nil {
			_, detail := httpx.Status(it.Err)
			res.Status, res.Detail, res.Message = "failed", detail, ""
			failed++
		}
		results[i] = res
	}
	status, overall := http.StatusMultiStatus, "partial"
	switch {
	case failed == len(results):
		overall = "failed"
	case failed == 0 && pending > 0:
		status, overall = http.StatusAccepted, "pending"
	case failed == 0:
		status, overall = http.StatusOK, "success"
	}
	httpx.JSON(w, status, map[string]any{"status": overall, "results": results})
}

func preferAsync(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "respond-async") {
				return true
			}
		}
	}
	return false
}
