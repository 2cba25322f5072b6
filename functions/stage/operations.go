package main

import (
	"net/http"
	"strconv"

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

// listOperations is GET /operations?username=&status=&limit=: the
// caller's operations (anyone's for an admin), newest first.
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
	caller, err := a.caller(r, "")
	if err != nil {
		httpx.Error(w, err)
		return
	}
	ops, err := a.svc.Operations(r.Context(), caller, f)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	httpx.JSON(w, http.StatusOK, map[string]any{"operations": ops})
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
