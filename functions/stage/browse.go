package main

import (
	"net/http"

	"github.com/ska-telescope/skao-staging-service/lib/httpx"
)

// maxBrowse is the most entries one listing returns; a larger directory is
// answered with its first maxBrowse names and "truncated": true.
const maxBrowse = 1000

// browse is GET /browse?path=: one directory of the source storage, so a
// user can pick local_path_on_storage instead of typing it. Paths follow the
// staging rules (os.Root): escapes are 403, missing paths 400.
//
// It needs a caller (with authentication on), and with capability scopes
// shows only what the caller's token lets them read or leads there.
func (a *api) browse(w http.ResponseWriter, r *http.Request) {
	dir := r.URL.Query().Get("path")
	caller, err := a.caller(r, "")
	if err != nil {
		httpx.Error(w, err)
		return
	}
	visible, err := a.svc.AuthorizeBrowse(caller, dir)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	l, err := a.f.Storage.List(dir, maxBrowse, visible)
	if err != nil {
		httpx.Error(w, err)
		return
	}
	httpx.JSON(w, http.StatusOK, l)
}
