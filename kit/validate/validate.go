// Package validate checks request messages before they reach a handler and
// answers INVALID_ARGUMENT with a google.rpc.BadRequest that lists every
// field violation at once.
//
// Rules are plain Go functions registered per message type in a Set:
//
//	rules := validate.NewSet()
//	validate.Rule(rules, func(m *greeterv1.SayHelloRequest, v *validate.Violations) {
//		v.Length("name", m.GetName(), 1, 100)
//	})
//
// kit/server runs the Set on every unary request and on every message a
// stream receives, and refuses to start when a served method's request type
// has no rule (messages without fields need none), so a new RPC cannot ship
// unvalidated by accident. A message type that has its own
// Validate() error method is checked with it when no rule is registered.
//
// A Set is filled at start-up and then read concurrently; Rule must not be
// called once the Set is in use.
package validate

import (
	"fmt"
	"sync"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Reason is the ErrorInfo reason of every validation failure.
const Reason = "INVALID_ARGUMENT"

// Set holds the rules of a service or a whole server, keyed by message type.
type Set struct {
	rules map[protoreflect.FullName]func(proto.Message, *Violations)
}

// NewSet returns an empty Set.
func NewSet() *Set {
	return &Set{rules: make(map[protoreflect.FullName]func(proto.Message, *Violations))}
}

// Rule registers fn as the rule for messages of type T, replacing any
// earlier one. fn must not keep v once it returns: Check reuses it.
func Rule[T proto.Message](s *Set, fn func(T, *Violations)) {
	var zero T
	name := zero.ProtoReflect().Descriptor().FullName()
	s.rules[name] = func(m proto.Message, v *Violations) { fn(m.(T), v) }
}

// Has reports whether the Set can check messages of the named type: it has
// a rule for it, or the type has no fields to check.
func (s *Set) Has(md protoreflect.MessageDescriptor) bool {
	if md.Fields().Len() == 0 {
		return true
	}
	_, ok := s.rules[md.FullName()]
	return ok
}

type selfValidator interface{ Validate() error }

// Check validates m. It returns nil when m is valid, an INVALID_ARGUMENT
// status error with a BadRequest when it is not, and nil for values that
// are not protobuf messages or have no rule.
func (s *Set) Check(m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return nil
	}
	fn, ok := s.rules[msg.ProtoReflect().Descriptor().FullName()]
	if !ok {
		if sv, ok := m.(selfValidator); ok {
			return sv.Validate()
		}
		return nil
	}
	v := violationsPool.Get().(*Violations)
	fn(msg, v)
	err := v.Err()
	// The error holds the list when there is one: the next Check starts a
	// new one rather than reuse it.
	v.list = nil
	violationsPool.Put(v)
	return err
}

// violationsPool recycles the Violations of Check, which would otherwise
// cost an allocation per message: a rule is called through a func value,
// so the collector it is given always escapes.
var violationsPool = sync.Pool{New: func() any { return new(Violations) }}

// Violations collects the field violations of one message. The zero value
// is ready to use; it is not safe for concurrent use.
type Violations struct {
	list []*errdetails.BadRequest_FieldViolation
}

// Add records a violation of field (a path such as "lines[2].quantity").
func (v *Violations) Add(field, description string) {
	v.list = append(v.list, status.FieldViolation(field, description))
}

// Addf records a violation with a formatted description.
func (v *Violations) Addf(field, format string, args ...any) {
	v.Add(field, fmt.Sprintf(format, args...))
}

// Len returns how many violations were recorded.
func (v *Violations) Len() int { return len(v.list) }

// Err returns nil when nothing was recorded, else the INVALID_ARGUMENT
// error listing every violation.
func (v *Violations) Err() error {
	if len(v.list) == 0 {
		return nil
	}
	msg := "invalid request: " + v.list[0].GetField() + ": " + v.list[0].GetDescription()
	if n := len(v.list); n > 1 {
		msg += fmt.Sprintf(" (and %d more)", n-1)
	}
	return status.InvalidArgument(status.KitDomain, Reason, msg, v.list...)
}

// Required records a violation when s is empty.
func (v *Violations) Required(field, s string) {
	if s == "" {
		v.Add(field, "is required")
	}
}

// Length records a violation unless s has between min and max characters
// (runes) and is valid UTF-8. A min of 1 makes the field required.
func (v *Violations) Length(field, s string, minLen, maxLen int) {
	if !utf8.ValidString(s) {
		v.Add(field, "must be valid UTF-8")
		return
	}
	n := utf8.RuneCountInString(s)
	switch {
	case n == 0 && minLen > 0:
		v.Add(field, "is required")
	case n < minLen:
		v.Addf(field, "must be at least %d characters", minLen)
	case n > maxLen:
		v.Addf(field, "must be at most %d characters", maxLen)
	}
}

// Range records a violation unless minVal <= n <= maxVal.
func (v *Violations) Range(field string, n, minVal, maxVal int64) {
	if n < minVal || n > maxVal {
		v.Addf(field, "must be between %d and %d", minVal, maxVal)
	}
}

// MaxItems records a violation when a repeated field has more than maxLen
// elements.
func (v *Violations) MaxItems(field string, n, maxLen int) {
	if n > maxLen {
		v.Addf(field, "must have at most %d elements", maxLen)
	}
}
