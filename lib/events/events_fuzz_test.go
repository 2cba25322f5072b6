package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// FuzzDecodeRequest delivers arbitrary events, in binary mode (ce-*
// headers) or in structured mode (the whole event as the body), as a
// Knative Trigger would, and checks that DecodeRequest either refuses them
// with a client error and a detail, so a broker does not retry, or returns
// a request carrying exactly the event's data, keyed by its source and id;
// and that encoding that request again gives the same request back.
func FuzzDecodeRequest(f *testing.F) {
	data := `{"method":"local_copy","username":"alice","local_path_on_storage":"a/b","relative_path":"c"}`
	f.Add(false, "42", "/rucio/rse/SITE", TypeRequest, "local_copy", "application/json", []byte(data))
	f.Add(false, "1", "/s", TypeRequest, "", "application/json", []byte(`{"method":"local_copy","operation_id":"x"}`))
	f.Add(false, "1", "/s", TypeRequest, "local_symlink", "application/json", []byte(data))
	f.Add(false, "1", "/s", "io.rucio.transfer-done", "", "application/json", []byte(data))
	f.Add(false, "1", "/s", TypeRequest, "", "text/plain", []byte("not json"))
	f.Add(false, "1", "/s", TypeRequest, "", "application/json", []byte(`{"method":1}`))
	f.Add(false, "", "", "", "", "", []byte{})
	f.Add(true, "", "", "", "", "application/cloudevents+json", []byte(`{"specversion":"1.0","id":"7","source":"/b","type":"`+
		TypeRequest+`","datacontenttype":"application/json","data":`+data+`}`))
	f.Add(true, "", "", "", "", "application/cloudevents+json", []byte(`{"specversion":"1.0","id":"7","source":"/b","type":"`+
		TypeRequest+`","data_base64":"eyJtZXRob2QiOiJsb2NhbF9jb3B5In0="}`))
	f.Add(true, "", "", "", "", "application/cloudevents+json", []byte(`{"specversion":"0.3","id":"7"}`))
	f.Add(true, "", "", "", "", "application/cloudevents+json", []byte(`[[[[[[[[[[`))
	f.Fuzz(func(t *testing.T, structured bool, id, source, typ, ext, contentType string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header = http.Header{}
		set := func(k, v string) {
			if v != "" {
				r.Header[k] = []string{v}
			}
		}
		set("Content-Type", contentType)
		if !structured {
			set("Ce-Specversion", "1.0")
			set("Ce-Id", id)
			set("Ce-Source", source)
			set("Ce-Type", typ)
			set("Ce-"+ExtMethod, ext)
		}
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			return // the Receiver answers 422 "Not a valid CloudEvent"
		}
		req, err := DecodeRequest(ev)
		if err != nil {
			var se *staging.Error
			if !errors.As(err, &se) || se.Kind.Transient() || se.Detail == "" {
				t.Fatalf("DecodeRequest: %v (%T): want a client error with a detail", err, err)
			}
			return
		}
		if ev.Type() != TypeRequest {
			t.Fatalf("accepted type %q", ev.Type())
		}
		var d struct {
			Method      string `json:"method"`
			Username    string `json:"username"`
			Source      string `json:"local_path_on_storage"`
			Target      string `json:"relative_path"`
			DID         string `json:"did"`
			OperationID string `json:"operation_id"`
		}
		if err := json.Unmarshal(ev.Data(), &d); err != nil {
			t.Fatalf("accepted data that is not JSON: %q", ev.Data())
		}
		if req.Method != d.Method || req.Username != d.Username || req.Source != d.Source ||
			req.Target != d.Target || req.DID != d.DID || req.OperationID != d.OperationID {
			t.Fatalf("request %+v does not carry the event data %+v", req, d)
		}
		if x, ok := ev.Extensions()[ExtMethod]; ok && fmt.Sprint(x) != req.Method {
			t.Fatalf("extension %s=%v accepted with method %q", ExtMethod, x, req.Method)
		}
		if req.EventSource != ev.Source() || req.EventID != ev.ID() {
			t.Fatalf("request keyed by %q/%q, event is %q/%q", req.EventSource, req.EventID, ev.Source(), ev.ID())
		}
		again, err := NewRequest("/again", &req)
		if err != nil {
			t.Fatalf("NewRequest: %v", err)
		}
		back, err := DecodeRequest(&again)
		back.EventSource, back.EventID = req.EventSource, req.EventID
		if err != nil || back != req {
			t.Fatalf("round trip: %+v %v, want %+v", back, err, req)
		}
	})
}
