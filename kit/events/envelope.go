package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
)

// MaxEventSize bounds a marshalled envelope. It stays under the default
// message limits of every supported broker (NATS 1 MiB, Kafka 1 MB), with
// room for headers.
const MaxEventSize = 512 << 10

// ErrTooLarge is returned for an event whose marshalled envelope exceeds
// MaxEventSize.
var ErrTooLarge = errors.New("events: event too large")

// traceContext is the W3C propagator; it reads the span context from a
// context and needs no global provider.
var traceContext propagation.TraceContext

// NewEnvelope wraps payload in an envelope: a new UUIDv7 id, the
// payload's full protobuf name as type, source and subject as given, now
// as the time, and the W3C trace context of the span in ctx (empty when
// ctx carries no valid span).
func NewEnvelope(ctx context.Context, source, subject string, payload proto.Message, now time.Time) (*eventsv1.Envelope, error) {
	if payload == nil || !payload.ProtoReflect().IsValid() {
		return nil, errors.New("events: nil payload")
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("events: event id: %w", err)
	}
	anyPayload, err := anypb.New(payload)
	if err != nil {
		return nil, fmt.Errorf("events: pack %s: %w", payload.ProtoReflect().Descriptor().FullName(), err)
	}
	env := &eventsv1.Envelope{
		Id:      id.String(),
		Type:    string(payload.ProtoReflect().Descriptor().FullName()),
		Source:  source,
		Subject: subject,
		Time:    timestamppb.New(now),
		Payload: anyPayload,
	}
	if trace.SpanContextFromContext(ctx).IsValid() {
		carrier := propagation.MapCarrier{}
		traceContext.Inject(ctx, carrier)
		env.Traceparent = carrier.Get("traceparent")
		env.Tracestate = carrier.Get("tracestate")
	}
	return env, nil
}

// Encode marshals env into the message a transport publishes: ID, Type
// and Key are the envelope's id, type and subject. It fails with
// ErrTooLarge if the envelope exceeds MaxEventSize.
func Encode(env *eventsv1.Envelope) (Message, error) {
	if err := check(env); err != nil {
		return Message{}, err
	}
	data, err := proto.Marshal(env)
	if err != nil {
		return Message{}, fmt.Errorf("events: marshal %s: %w", env.GetType(), err)
	}
	if len(data) > MaxEventSize {
		return Message{}, fmt.Errorf("events: %s of %d bytes (limit %d): %w", env.GetType(), len(data), MaxEventSize, ErrTooLarge)
	}
	return Message{ID: env.GetId(), Type: env.GetType(), Key: env.GetSubject(), Data: data}, nil
}

// Decode unmarshals the envelope in m. A message that does not hold a
// well-formed envelope (no id, no payload, a type that is not the
// payload's) fails with an error wrapping ErrPermanent, since no retry
// can fix it.
func Decode(m Message) (*eventsv1.Envelope, error) {
	if len(m.Data) > MaxEventSize {
		return nil, fmt.Errorf("events: message %q of %d bytes (limit %d): %w", m.ID, len(m.Data), MaxEventSize, ErrPermanent)
	}
	env := &eventsv1.Envelope{}
	if err := proto.Unmarshal(m.Data, env); err != nil {
		return nil, fmt.Errorf("events: decode message %q: %w: %w", m.ID, ErrPermanent, err)
	}
	if err := check(env); err != nil {
		return nil, fmt.Errorf("events: decode message %q: %w: %w", m.ID, ErrPermanent, err)
	}
	return env, nil
}

// check reports what makes env unusable, if anything.
func check(env *eventsv1.Envelope) error {
	switch {
	case env == nil:
		return errors.New("nil envelope")
	case env.GetId() == "":
		return errors.New("envelope without id")
	case env.GetPayload() == nil:
		return fmt.Errorf("envelope %s without payload", env.GetId())
	case string(env.GetPayload().MessageName()) != env.GetType():
		return fmt.Errorf("envelope %s: type %q does not match payload %q", env.GetId(), env.GetType(), env.GetPayload().MessageName())
	}
	return nil
}

// producerLink returns the span context of the operation that caused env,
// from its traceparent and tracestate; it is invalid when they are absent
// or malformed.
func producerLink(env *eventsv1.Envelope) trace.SpanContext {
	if env.GetTraceparent() == "" {
		return trace.SpanContext{}
	}
	carrier := propagation.MapCarrier{"traceparent": env.GetTraceparent()}
	if env.GetTracestate() != "" {
		carrier["tracestate"] = env.GetTracestate()
	}
	return trace.SpanContextFromContext(traceContext.Extract(context.Background(), carrier))
}
