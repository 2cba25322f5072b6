// Command logs is the logs function: GET /logs shows the one log that every
// replica of every function writes to the shared store, as text, as JSON, or
// followed live as server-sent events.
package main

import (
	"net/http"

	"github.com/ska-telescope/skao-staging-service/lib/function"
)

func main() {
	function.Main("logs", func(f *function.Function) (http.Handler, error) {
		authn, err := f.Authenticator()
		if err != nil {
			return nil, err
		}
		a := newAPI(f.Store, authn, f.Config.MaxLogStreams)
		// On SIGTERM open streams end at once, with their last ids, for
		// their clients to resume elsewhere: the drain does not wait for
		// them.
		f.OnStopping(a.stop)
		return a.handler(), nil
	})
}
