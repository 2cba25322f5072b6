// Command coldbaseline is the floor for the bench's cold-start row: the
// smallest Go HTTP server that answers POST /stage_data on $PORT with 200
// and {"status":"success"}, doing no work.
package main

import (
	"io"
	"log"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("POST /stage_data", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"success"}`+"\n")
	})
	log.Fatal(http.ListenAndServe(":"+os.Getenv("PORT"), nil))
}
