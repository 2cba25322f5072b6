// Package logging gives every function one log: records go to stdout as JSON
// for the cluster's log collection and, through a bounded, batched,
// non-blocking Writer, to the shared store, so the logs function can show
// what every replica of every function did, in time order.
//
// Logging never slows a request noticeably and never fails it: when the
// store is slow or down, records are dropped and counted, not queued without
// bound.
package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Record is one log record as the store keeps it. In JSON its level is the
// name (DEBUG, INFO, WARNING, ERROR).
type Record struct {
	ID        int64
	Time      time.Time
	Level     slog.Level
	Message   string
	Function  string
	Instance  string // the replica: host name and process id
	Operation string
	Username  string
	TraceID   string
	SpanID    string
	Attrs     Attrs
}

// recordJSON is a Record as the logs API writes it.
type recordJSON struct {
	ID        int64     `json:"id"`
	Time      time.Time `json:"time"`
	Level     string    `json:"level"`
	Message   string    `json:"message"`
	Function  string    `json:"function"`
	Instance  string    `json:"instance"`
	Operation string    `json:"operation,omitempty"`
	Username  string    `json:"username,omitempty"`
	TraceID   string    `json:"trace_id,omitempty"`
	SpanID    string    `json:"span_id,omitempty"`
	Attrs     Attrs     `json:"attributes"`
}

// MarshalJSON writes the record with its level's name.
func (r Record) MarshalJSON() ([]byte, error) {
	if r.Attrs == nil {
		r.Attrs = Attrs{}
	}
	return json.Marshal(recordJSON{r.ID, r.Time.UTC(), LevelName(r.Level), r.Message, r.Function, r.Instance,
		r.Operation, r.Username, r.TraceID, r.SpanID, r.Attrs})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Record) UnmarshalJSON(b []byte) error {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	l, err := ParseLevel(j.Level)
	if err != nil {
		return fmt.Errorf("level: %w", err)
	}
	*r = Record{j.ID, j.Time, l, j.Message, j.Function, j.Instance, j.Operation, j.Username, j.TraceID, j.SpanID, j.Attrs}
	return nil
}

// Query selects records: at least Level (all levels when nil), matching
// every field that is set, at or after Since and with an id above After; the
// newest Limit of them, returned oldest first.
type Query struct {
	Level     slog.Leveler
	Username  string
	Operation string
	Function  string
	Since     time.Time
	After     int64
	Limit     int
	// Ascending asks for the first Limit records above After in id order
	// (as any After above 0 does), also when After is 0.
	Ascending bool
	// IDs, when set, selects the records of these ids only, in id order
	// (Limit is their number): a reader that learnt from LogIDs which
	// records it needs reads them a few at a time.
	IDs []int64
}

// Store keeps log records. It is separate from staging.Store: logs are not
// part of any operation's record.
type Store interface {
	// AppendLogs inserts records in one batch; their IDs are assigned by the store.
	AppendLogs(ctx context.Context, records []Record) error
	// QueryLogs returns the records matching q, oldest first.
	QueryLogs(ctx context.Context, q Query) ([]Record, error)
	// LogIDs returns the ids of the records QueryLogs(q) returns, in the
	// same order, without reading the records themselves.
	LogIDs(ctx context.Context, q Query) ([]int64, error)
	// LastLogID returns the highest id in the store, 0 when it is empty.
	LastLogID(ctx context.Context) (int64, error)
	// PruneLogs deletes records older than before and returns how many.
	PruneLogs(ctx context.Context, before time.Time) (int64, error)
}

// LevelWarning is slog's WARN, named as the earlier service named it.
const LevelWarning = slog.LevelWarn

// LevelName is the earlier service's name of l: DEBUG, INFO, WARNING or
// ERROR (a level between two names takes the lower one's).
func LevelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	}
	return "DEBUG"
}

// ParseLevel reads a level name (DEBUG, INFO, WARNING or WARN, ERROR or
// CRITICAL), in any case.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "DEBUG":
		return slog.LevelDebug, nil
	case "INFO":
		return slog.LevelInfo, nil
	case "WARNING", "WARN":
		return slog.LevelWarn, nil
	case "ERROR", "CRITICAL":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not one of DEBUG, INFO, WARNING, ERROR", s)
}

// TimeFormat is RFC 3339 in UTC with microseconds, as records are stored.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// Text is the record as one line of the earlier service's format,
// "<time> - <LEVEL> - <message>", followed by function=<name> and the
// record's attributes as key=value (values quoted when they need it).
func (r Record) Text() string {
	var b strings.Builder
	b.WriteString(r.Time.UTC().Format(TimeFormat))
	b.WriteString(" - ")
	b.WriteString(LevelName(r.Level))
	b.WriteString(" - ")
	b.WriteString(oneLine(r.Message))
	if r.Function != "" {
		b.WriteString(" function=")
		b.WriteString(textValue(r.Function))
	}
	for _, a := range r.Attrs {
		b.WriteByte(' ')
		b.WriteString(a.Key)
		b.WriteByte('=')
		b.WriteString(textValue(a.Value))
	}
	return b.String()
}

// oneLine keeps a message on its line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// textValue renders v plainly when it is a simple word and quoted otherwise.
func textValue(v any) string {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case nil:
		return "null"
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	default:
		j, err := json.Marshal(x)
		if err != nil {
			return strconv.Quote(fmt.Sprint(x))
		}
		s = string(j)
	}
	if s == "" || strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || r == '"' || r == '=' || !unicode.IsPrint(r)
	}) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// Attr is one attribute of a record.
type Attr struct {
	Key   string
	Value any // string, json.Number, bool, nil, or JSON objects and arrays decoded as any
}

// Attrs are a record's attributes in the order they were logged. They are
// a JSON object in the store and in the logs API.
type Attrs []Attr

// Get returns the value of key, or nil.
func (as Attrs) Get(key string) any {
	for _, a := range as {
		if a.Key == key {
			return a.Value
		}
	}
	return nil
}

// MarshalJSON writes a JSON object with the keys in order.
func (as Attrs) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, a := range as {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(a.Key)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(a.Value)
		if err != nil {
			v, _ = json.Marshal(fmt.Sprint(a.Value))
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads a JSON object keeping its keys' order.
func (as *Attrs) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("attributes: %w", err)
	}
	if tok == nil {
		*as = nil
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("attributes: want a JSON object")
	}
	out := Attrs{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("attributes: %w", err)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("attributes: %w", err)
		}
		out = append(out, Attr{Key: tok.(string), Value: v})
	}
	*as = out
	return nil
}
