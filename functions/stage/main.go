// Command stage is the stage function: the HTTP API of the staging service
// (POST /stage_data and the routes around it) and a CloudEvents receiver for
// org.skao.staging.request, running local_copy, local_symlink and
// direct_download.
package main

import (
	"net/http"

	"github.com/ska-telescope/skao-staging-service/lib/events"
	"github.com/ska-telescope/skao-staging-service/lib/function"
	"github.com/ska-telescope/skao-staging-service/lib/methods"
)

const source = "/skao/staging/stage"

func main() {
	function.Main("stage", func(f *function.Function) (http.Handler, error) {
		f.Service.Register(methods.LocalCopy{Storage: f.Storage, Options: f.Options})
		f.Service.Register(methods.LocalSymlink{Storage: f.Storage, Options: f.Options})
		f.Service.Register(methods.DirectDownload{Storage: f.Storage})
		a := &api{f: f, receiver: &events.Receiver{Service: f.Service, Source: source, Logger: f.Logger}}
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
