package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// methodInfo is what the web page and clients learn of a method.
type methodInfo struct {
	Name         string `json:"name"`
	Streams      bool   `json:"streams"`       // the answer is the content (a download)
	NeedsTarget  bool   `json:"needs_target"`  // relative_path is required
	JupyterToken bool   `json:"jupyter_token"` // takes the user's JupyterHub token
}

// methods lists the methods a request may name here, with their traits.
func (a *api) methods() ([]string, []methodInfo) {
	names, infos := []string{}, []methodInfo{}
	for _, m := range a.svc.Methods() {
		t := m.Traits()
		names = append(names, m.Name())
		infos = append(infos, methodInfo{Name: m.Name(), Streams: t.Streams, NeedsTarget: t.NeedsTarget, JupyterToken: t.JupyterToken})
	}
	return names, infos
}

// config is GET /config: what a client needs to use the service, the
// sign-in settings included (the page reads them before anyone signs in).
// The storage roots, which are the server's own paths, only to an admin.
func (a *api) config(w http.ResponseWriter, r *http.Request) {
	c := a.f.Config
	names, infos := a.methods()
	answer := map[string]any{"allowed_methods": names, "methods": infos, "auth_mode": c.AuthMode}
	if c.AuthMode == "oidc" {
		answer["oidc"] = map[string]string{"issuer": c.OIDC.IssuerURL, "client_id": c.OIDC.ClientID, "scopes": c.OIDC.Scopes}
	}
	if caller, err := a.caller(r, ""); err == nil && caller.Admin {
		answer["source_storage_path"], answer["target_storage_path"] = c.SourceStoragePath, c.TargetStoragePath
	}
	httpx.JSON(w, http.StatusOK, answer)
}

func (a *api) allowedMethods(w http.ResponseWriter, r *http.Request) {
	names, _ := a.methods()
	httpx.JSON(w, http.StatusOK, map[string]any{"allowed_methods": names})
}

// listOperations is GET /operations?username=&status=&limit=&cursor=: one
// page of the caller's operations (anyone's for an admin), newest first,
// and the cursor of the next page. The answer carries an ETag of its
// bytes: a client polling with If-None-Match gets 304 and no body while
// nothing changed.
func (a *api) listOperations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := staging.Filter{Username: q.Get("username"), Status: staging.Status(q.Get("status")), Limit: 100}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httpx.Error(w, staging.Errorf(staging.Invalid, "limit must be a number from 1 to 1000"))
			return
		}
		f.Limit = n
	}
	if v, ok := q["cursor"]; ok {
		c, err := staging.DecodeCursor(v[0])
		if err != nil {
			httpx.Error(w, err)
			return
		}
		f.After = c
	}
	caller, err := a.caller(r, "")
	if err != nil {
		httpx.Error(w, err)
		return
	}
	page, err := a.svc.OperationsPage(r.Context(), caller, f, 0)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	var next *string
	if page.Next != nil {
		token := page.Next.Encode()
		next = &token
	}
	body, err := json.Marshal(map[string]any{"operations": page.Operations, "next": next})
	if err != nil {
		httpx.Error(w, staging.Wrap(staging.Internal, "Cannot list operations", err))
		return
	}
	sum := sha256.Sum256(body)
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("Vary", "Authorization")
	if matchesETag(r.Header.Values("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(http.StatusOK)
	w.Write(append(body, '\n'))
}

// matchesETag reports whether an If-None-Match header names etag (weak
// comparison, as RFC 9110 asks for If-None-Match).
func matchesETag(headers []string, etag string) bool {
	for _, h := range headers {
		for _, v := range strings.Split(h, ",") {
			v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
			if v == etag || v == "*" {
				return true
			}
		}
	}
	return false
}

// getOperation is GET /operations/<id>: one of the caller's operations.
func (a *api) getOperation(w http.ResponseWriter, r *http.Request) {
	caller, err := a.caller(r, "")
	if err != nil {
		httpx.Error(w, err)
		return
	}
	op, err := a.svc.Operation(r.Context(), caller, r.PathValue("id"))
	if err != nil {
		httpx.Error(w, err)
		return
	}
	httpx.JSON(w, http.StatusOK, op)
}

// createFile is the earlier test page's file creator: it writes a new file
// into the source storage (never over an existing one).
func (a *api) createFile(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Filename *string `json:"filename"`
		Content  *string `json:"content"`
	}
	if err := httpx.DecodeJSON(w, r, &body); err != nil {
		httpx.Error(w, err)
		return
	}
	if body.Filename == nil || *body.Filename == "" || body.Content == nil {
		httpx.Error(w, staging.Errorf(staging.Invalid, "filename and content are required"))
		return
	}
	caller, err := a.caller(r, "")
	if err == nil {
		err = staging.AuthorizeAdmin(caller)
	}
	if err != nil {
		httpx.Error(w, err)
		return
	}
	rel, err := a.f.Storage.CreateFile(*body.Filename, []byte(*body.Content))
	if err != nil {
		httpx.Error(w, err)
		return
	}
	a.f.Logger.Info("file created", "path", rel)
	httpx.JSON(w, http.StatusOK, map[string]string{"status": "success", "message": "File created at " + rel})
}
