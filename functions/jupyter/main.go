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

	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/httpx"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
)

func main() {
	function.MainStaging("jupyter", methods.All, func(f *function.Function) (http.Handler, error) {
		if f.Config.JupyterHubURL == "" {
			f.Logger.Warn("JUPYTERHUB_URL is not set: jupyter_copy answers 503")
		}
		receiver, err := f.Receiver()
		if err != nil {
			return nil, err
		}
		m := httpx.NewMux()
		m.Route(http.MethodPost, "/", receiver.ServeHTTP)
		return m, nil
	})
}
