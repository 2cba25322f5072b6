// Command jupyter is the jupyter function: it runs jupyter_copy, putting
// data from the source storage into a user's JupyterHub workspace. It takes
// org.skao.staging.request events at POST /, handed on by the stage function
// (which keeps the public /stage_data) or delivered straight by a Knative
// Trigger filtering on stagingmethod=jupyter_copy, and answers with a reply
// event. It records operations in the database it shares with the stage
// function.
package main

import (
	"net/http"

	"github.com/ska-telescope/skao-staging-service/lib/auth"
	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/jupyterhub"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
)

const source = "/skao/staging/jupyter"

func main() {
	function.Main("jupyter", func(f *function.Function) (http.Handler, error) {
		var hub *jupyterhub.Client
		if f.Config.JupyterHubURL != "" {
			var err error
			if hub, err = jupyterhub.New(f.Config.JupyterHubURL); err != nil {
				return nil, err
			}
		} else {
			f.Logger.Warn("JUPYTERHUB_URL is not set: jupyter_copy answers 503")
		}
		f.Service.Register(methods.JupyterCopy{Storage: f.Storage, Hub: hub, ServiceToken: f.Config.JupyterHubAPIToken,
			StartTimeout: f.Config.JupyterHubStart, Logger: f.Logger, Alive: f.OperationAlive})
		receiver := &events.Receiver{Service: f.Service, Source: source, Logger: f.Logger,
			Auth: auth.ForMode(f.Config.AuthMode, hub)}
		m := httpx.NewMux()
		m.Route(http.MethodPost, "/", receiver.ServeHTTP)
		return m, nil
	})
}
