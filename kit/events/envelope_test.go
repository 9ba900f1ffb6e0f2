package events_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

func TestNewEnvelope(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, err := trace.ParseTraceState("vendor=value")
	if err != nil {
		t.Fatal(err)
	}
	spanCtx := trace.ContextWithSpanContext(t.Context(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts,
	}))
	now := time.Date(2026, 3, 4, 5, 6, 7, 8000, time.UTC)
	payload := &eventsv1.StockChanged{ItemId: "item-1", OnHand: 3, Version: 7}

	tests := []struct {
		name                    string
		ctx                     func() trace.SpanContext
		traceparent, tracestate string
	}{
		{"with span", func() trace.SpanContext { return trace.SpanContextFromContext(spanCtx) },
			"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=value"},
		{"without span", func() trace.SpanContext { return trace.SpanContext{} }, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := trace.ContextWithSpanContext(t.Context(), tc.ctx())
			env, err := events.NewEnvelope(ctx, "inventory", "item-1", payload, now)
			if err != nil {
				t.Fatalf("NewEnvelope = %v", err)
			}
			id, err := uuid.Parse(env.GetId())
			if err != nil || id.Version() != 7 {
				t.Errorf("id = %q (%v), want a UUIDv7", env.GetId(), err)
			}
			wantAny, err := anypb.New(payload)
			if err != nil {
				t.Fatal(err)
			}
			want := &eventsv1.Envelope{
				Id:          env.GetId(),
				Type:        "switchboard.events.v1.StockChanged",
				Source:      "inventory",
				Subject:     "item-1",
				Time:        timestamppb.New(now),
				Traceparent: tc.traceparent,
				Tracestate:  tc.tracestate,
				Payload:     wantAny,
			}
			if diff := cmp.Diff(want, env, protocmp.Transform()); diff != "" {
				t.Errorf("NewEnvelope mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewEnvelopeIDsSortByTime(t *testing.T) {
	var prev string
	for i := range 100 {
		env, err := events.NewEnvelope(t.Context(), "s", "x", &eventsv1.StockChanged{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if env.GetId() <= prev {
			t.Fatalf("id %d = %s, not after %s", i, env.GetId(), prev)
		}
		prev = env.GetId()
	}
}

func TestEncodeDecode(t *testing.T) {
	env, err := events.NewEnvelope(t.Context(), "order", "order-9", &eventsv1.OrderPlaced{OrderId: "order-9"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m, err := events.Encode(env)
	if err != nil {
		t.Fatalf("Encode = %v", err)
	}
	if m.ID != env.GetId() || m.Type != "switchboard.events.v1.OrderPlaced" || m.Key != "order-9" {
		t.Errorf("Encode = {ID %q, Type %q, Key %q}, want {%q, %q, %q}",
			m.ID, m.Type, m.Key, env.GetId(), "switchboard.events.v1.OrderPlaced", "order-9")
	}
	got, err := events.Decode(m)
	if err != nil {
		t.Fatalf("Decode = %v", err)
	}
	if diff := cmp.Diff(env, got, protocmp.Transform()); diff != "" {
		t.Errorf("Decode(Encode(env)) mismatch (-want +got):\n%s", diff)
	}
}

func TestEncodeTooLarge(t *testing.T) {
	big := &eventsv1.UserRegistered{UserId: "u", DisplayName: strings.Repeat("x", events.MaxEventSize)}
	env, err := events.NewEnvelope(t.Context(), "identity", "u", big, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.Encode(env); !errors.Is(err, events.ErrTooLarge) {
		t.Errorf("Encode(%d-byte payload) = %v, want ErrTooLarge", events.MaxEventSize, err)
	}
}

func TestDecodeErrorsArePermanent(t *testing.T) {
	good, err := events.NewEnvelope(t.Context(), "s", "x", &eventsv1.StockChanged{ItemId: "x"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(e *eventsv1.Envelope)) []byte {
		e := proto.Clone(good).(*eventsv1.Envelope)
		f(e)
		b, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"garbage", []byte("\xff\xff\xff not a protobuf")},
		{"empty", nil},
		{"no id", mutate(func(e *eventsv1.Envelope) { e.Id = "" })},
		{"no payload", mutate(func(e *eventsv1.Envelope) { e.Payload = nil })},
		{"type mismatch", mutate(func(e *eventsv1.Envelope) { e.Type = "switchboard.events.v1.OrderPlaced" })},
		{"too large", make([]byte, events.MaxEventSize+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := events.Decode(events.Message{ID: "m", Data: tc.data})
			if !errors.Is(err, events.ErrPermanent) {
				t.Errorf("Decode(%s) = %v, want an error wrapping ErrPermanent", tc.name, err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	env, err := events.NewEnvelope(f.Context(), "s", "x", &eventsv1.StockChanged{ItemId: "x"}, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	m, err := events.Encode(env)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m.Data)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := events.Decode(events.Message{Data: data})
		if err != nil {
			if !errors.Is(err, events.ErrPermanent) {
				t.Fatalf("Decode error %v does not wrap ErrPermanent", err)
			}
			return
		}
		if env.GetId() == "" || string(env.GetPayload().MessageName()) != env.GetType() {
			t.Fatalf("Decode accepted a malformed envelope: %v", env)
		}
	})
}
