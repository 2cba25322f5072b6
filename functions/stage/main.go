// Command stage is the stage function: the HTTP API of the staging service
// (POST /stage_data and the routes around it) and a CloudEvents receiver for
// org.skao.staging.request, running local_copy, local_symlink and
// direct_download; jupyter_copy is handed on to the jupyter function.
package main

import (
	"net/http"

	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/jupyterhub"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
)

const source = "/skao/staging/stage"

// authorizer is the check of callers that AUTH_MODE asks for (nil: none).
func authorizer(f *function.Function) (*auth.Authorizer, error) {
	if f.Config.AuthMode != "jupyterhub" {
		return nil, nil
	}
	hub, err := jupyterhub.New(f.Config.JupyterHubURL)
	if err != nil {
		return nil, err
	}
	return auth.New(hub, 0), nil
}

func main() {
	function.Main("stage", func(f *function.Function) (http.Handler, error) {
		f.Service.Register(methods.LocalCopy{Storage: f.Storage, Options: f.Options})
		f.Service.Register(methods.LocalSymlink{Storage: f.Storage, Options: f.Options})
		f.Service.Register(methods.DirectDownload{Storage: f.Storage})
		// jupyter_copy runs in the jupyter function; without its URL the
		// method is unknown here (400).
		if f.Config.JupyterFunctionURL != "" {
			f.Service.Register(methods.Forward{Method: "jupyter_copy", URL: f.Config.JupyterFunctionURL, Source: source})
		}
		authz, err := authorizer(f)
		if err != nil {
			return nil, err
		}
		a := &api{f: f, auth: authz, receiver: &events.Receiver{Service: f.Service, Source: source, Logger: f.Logger, Auth: authz}}
		if f.Config.Sink != "" {
			sender, err := events.NewSender(f.Config.Sink)
			if err != nil {
				return nil, err
			}
			a.sender = sender
		}
		wireRucio(f, a)
		return a.routes(), nil
	})
}
