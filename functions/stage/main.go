// Command stage is the stage function: the HTTP API of the staging service
// (POST /stage_data and the routes around it, the web page) and a
// CloudEvents receiver for org.skao.staging.request and Rucio's
// io.rucio.transfer-done. It runs local_copy, local_symlink and
// direct_download; jupyter_copy is handed on to the jupyter function.
package main

import (
	"net/http"

	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
	"github.com/ska-telescope/skao-staging-service/lib/rucio"
)

func main() {
	function.MainStaging("stage", methods.All, func(f *function.Function) (http.Handler, error) {
		receiver, err := f.Receiver()
		if err != nil {
			return nil, err
		}
		if rse, ok := f.Service.DIDs.(*rucio.RSE); ok {
			completer := &rucio.Completer{Service: f.Service, RSE: rse, Logger: f.Logger}
			receiver.Handlers = map[string]events.Handler{rucio.TypeTransferDone: completer.HandleEvent}
		}
		a := &api{f: f, svc: f.Service, auth: f.Auth, receiver: receiver}
		return a.routes(), nil
	})
}
