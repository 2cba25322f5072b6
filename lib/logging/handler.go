package logging

import (
	"context"
	"encoding"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Options configure a Handler.
type Options struct {
	Level    slog.Leveler // minimum level (LOGGING_LEVEL); INFO when nil
	Function string       // the function's name, on every record
	Instance string       // the replica; Instance() when ""
	// Store receives every record as well as stdout; nil logs to stdout only.
	Store *Writer
}

// Handler writes each record to its stdout handler as JSON and hands a copy
// to the store's Writer. Trace and span ids of the context's span go with
// both, so logs and traces can be joined.
type Handler struct {
	stdout slog.Handler
	opts   Options
	attrs  []Attr // from WithAttrs, keys prefixed by their groups
	prefix string // groups opened by WithGroup, as "a.b."
}

// New returns a Handler writing JSON lines to w (stdout in production).
func New(w io.Writer, o Options) *Handler {
	if o.Level == nil {
		o.Level = slog.LevelInfo
	}
	if o.Instance == "" {
		o.Instance = Instance()
	}
	var h slog.Handler = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: o.Level, ReplaceAttr: levelNames})
	if o.Function != "" {
		h = h.WithAttrs([]slog.Attr{slog.String("function", o.Function)})
	}
	return &Handler{stdout: h, opts: o}
}

// levelNames writes levels by the earlier service's names (WARNING, not WARN).
func levelNames(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.LevelKey {
		if l, ok := a.Value.Any().(slog.Level); ok {
			return slog.String(slog.LevelKey, LevelName(l))
		}
	}
	return a
}

// Instance names this replica: its host name (the pod's, on Kubernetes) and
// process id.
func Instance() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return host + "/" + strconv.Itoa(os.Getpid())
}

// Enabled reports whether l is at least the configured level.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.opts.Level.Level()
}

// Handle writes r to stdout and queues it for the store; a full queue drops
// it (counted) rather than wait.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	out := r
	if sc.IsValid() {
		out = r.Clone()
		out.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	err := h.stdout.Handle(ctx, out)
	if h.opts.Store == nil {
		return err
	}
	rec := Record{Time: r.Time, Level: r.Level, Message: r.Message, Function: h.opts.Function,
		Instance: h.opts.Instance, Attrs: make(Attrs, 0, len(h.attrs)+r.NumAttrs())}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	if sc.IsValid() {
		rec.TraceID, rec.SpanID = sc.TraceID().String(), sc.SpanID().String()
	}
	rec.Attrs = append(rec.Attrs, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs = appendAttr(rec.Attrs, h.prefix, a)
		return true
	})
	for _, a := range rec.Attrs {
		switch a.Key {
		case "operation", "operation_id":
			rec.Operation, _ = a.Value.(string)
		case "username":
			rec.Username, _ = a.Value.(string)
		}
	}
	h.opts.Store.Add(rec)
	return err
}

// WithAttrs returns a Handler that adds attrs to every record.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	c := *h
	c.stdout = h.stdout.WithAttrs(attrs)
	c.attrs = append([]Attr(nil), h.attrs...)
	for _, a := range attrs {
		c.attrs = appendAttr(c.attrs, h.prefix, a)
	}
	return &c
}

// WithGroup returns a Handler that puts later attributes under name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.stdout = h.stdout.WithGroup(name)
	c.prefix = h.prefix + name + "."
	return &c
}

// appendAttr adds a as plain values, groups flattened to dotted keys.
func appendAttr(as []Attr, prefix string, a slog.Attr) []Attr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			as = appendAttr(as, p, g)
		}
		return as
	}
	if a.Key == "" {
		return as
	}
	return append(as, Attr{Key: prefix + a.Key, Value: plain(v)})
}

// plain turns a slog value into what encoding/json writes as slog's JSON
// handler would.
func plain(v slog.Value) any {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindInt64:
		return v.Int64()
	case slog.KindUint64:
		return v.Uint64()
	case slog.KindFloat64:
		return v.Float64()
	case slog.KindBool:
		return v.Bool()
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindTime:
		return v.Time().UTC().Format(TimeFormat)
	}
	switch x := v.Any().(type) {
	case error:
		return x.Error()
	case json.Marshaler:
		return x
	case encoding.TextMarshaler:
		if b, err := x.MarshalText(); err == nil {
			return string(b)
		}
	case fmt.Stringer:
		return x.String()
	}
	return v.Any()
}
