package telemetry

import (
	"context"
	"io"
	"log/slog"
	"slices"

	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-rpc/switchboard/kit/requestid"
)

// Keys of the attributes that NewLogHandler adds to records.
const (
	LogKeyTraceID   = "trace_id"
	LogKeySpanID    = "span_id"
	LogKeyRequestID = "request_id"
)

// groupFrame is a group opened by WithGroup and the attributes added inside
// it before the next group was opened.
type groupFrame struct {
	name  string
	attrs []slog.Attr
}

type logHandler struct {
	// next has every WithAttrs call made before the first WithGroup applied.
	next slog.Handler
	// groups are the groups opened since, outermost first; kept here rather
	// than passed to next so that the ids can be added outside them.
	groups []groupFrame
}

// NewLogHandler returns a handler that adds to every record, at the top
// level, trace_id and span_id when the record's context carries a valid span
// context (trace.SpanContextFromContext) and request_id when it carries a
// request id (requestid.FromContext), then passes it to next. Records logged
// without a context (Info rather than InfoContext) get no ids.
//
// The ids stay at the top level even in a logger made with WithGroup: the
// handler keeps the groups itself and rebuilds the record's attributes
// inside them when handling, so logger.WithGroup("db").InfoContext(ctx, "q",
// "rows", 3) produces trace_id=… db.rows=3, not db.trace_id. Attributes given
// to WithAttrs before any WithGroup are passed to next.WithAttrs as usual
// (preformatted by the built-in handlers); grouped loggers cost a few
// allocations per record more.
//
// The handler is safe for concurrent use if next is. It holds nothing that
// needs closing.
func NewLogHandler(next slog.Handler) slog.Handler {
	return &logHandler{next: next}
}

// Enabled implements slog.Handler.
func (h *logHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// WithAttrs implements slog.Handler.
func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	if len(h.groups) == 0 {
		return &logHandler{next: h.next.WithAttrs(attrs)}
	}
	groups := slices.Clone(h.groups)
	last := &groups[len(groups)-1]
	last.attrs = append(slices.Clip(last.attrs), attrs...)
	return &logHandler{next: h.next, groups: groups}
}

// WithGroup implements slog.Handler.
func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	groups := append(slices.Clip(h.groups), groupFrame{name: name})
	return &logHandler{next: h.next, groups: groups}
}

// Handle implements slog.Handler.
func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	var ids [3]slog.Attr
	n := 0
	if ctx != nil {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			ids[0] = slog.String(LogKeyTraceID, sc.TraceID().String())
			ids[1] = slog.String(LogKeySpanID, sc.SpanID().String())
			n = 2
		}
		if id := requestid.FromContext(ctx); id != "" && !hasAttr(r, LogKeyRequestID) {
			ids[n] = slog.String(LogKeyRequestID, id)
			n++
		}
	}
	if len(h.groups) == 0 {
		if n > 0 {
			r.AddAttrs(ids[:n]...)
		}
		return h.next.Handle(ctx, r)
	}

	// Rebuild the record: ids first, then the groups with their attributes,
	// the record's own attributes innermost.
	inner := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		inner = append(inner, a)
		return true
	})
	for i := len(h.groups) - 1; i >= 0; i-- {
		g := h.groups[i]
		attrs := inner
		if len(g.attrs) > 0 {
			attrs = append(slices.Clip(g.attrs), inner...)
		}
		if len(attrs) == 0 {
			inner = nil // an empty group is dropped, as slog's handlers do
			continue
		}
		inner = []slog.Attr{{Key: g.name, Value: slog.GroupValue(attrs...)}}
	}
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(ids[:n]...)
	nr.AddAttrs(inner...)
	return h.next.Handle(ctx, nr)
}

// NewLogger returns a logger writing to w through NewLogHandler: JSON lines
// when format is "json" (or anything but "text"), slog's text format when it
// is "text". level is the minimum level logged; nil means Info. The logger
// is safe for concurrent use if writes to w are; the caller keeps owning w.
func NewLogger(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(NewLogHandler(h))
}

// hasAttr reports whether r already has a top-level attribute named key, as
// the access log's records do, so the id is not written twice.
func hasAttr(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}
