package main

import (
	_ "embed"
	"net/http"
)

// openAPI is the hand-written OpenAPI 3.0 description of the service's
// public API. The tests check live answers against it, so it stays true.
//
//go:embed openapi.json
var openAPI []byte

// serveOpenAPI is GET /openapi.json.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(openAPI)
}
