package audit

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/audit/v1"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Limits of the requests, enforced by Rules.
const (
	MaxPageTokenLen = 100
	// MaxTailTypes bounds the event types a Tail request may filter on.
	MaxTailTypes = 50
)

// Rules adds the validation rules of every AuditService request to s.
func Rules(s *validate.Set) {
	validate.Rule(s, func(m *auditv1.QueryRequest, v *validate.Violations) {
		v.Length("event_type", m.GetEventType(), 0, MaxFieldLen)
		v.Length("subject", m.GetSubject(), 0, MaxFieldLen)
		start, startOK := timestamp(v, "start_time", m.GetStartTime())
		end, endOK := timestamp(v, "end_time", m.GetEndTime())
		if startOK && endOK && m.GetStartTime() != nil && m.GetEndTime() != nil && !start.Before(end) {
			v.Add("end_time", "must be after start_time")
		}
		v.Range("page_size", int64(m.GetPageSize()), 0, MaxPageSize)
		v.Length("page_token", m.GetPageToken(), 0, MaxPageTokenLen)
	})
	validate.Rule(s, func(m *auditv1.TailRequest, v *validate.Violations) {
		if m.GetAfterSequence() < 0 {
			v.Add("after_sequence", "must not be negative")
		}
		types := m.GetEventTypes()
		if len(types) > MaxTailTypes {
			v.MaxItems("event_types", len(types), MaxTailTypes)
			return
		}
		for i, t := range types {
			v.Length(fmt.Sprintf("event_types[%d]", i), t, 1, MaxFieldLen)
		}
	})
	validate.Rule(s, func(m *auditv1.VerifyRequest, v *validate.Violations) {
		from, to := m.GetFromSequence(), m.GetToSequence()
		if from < 0 {
			v.Add("from_sequence", "must not be negative")
		}
		switch {
		case to < 0:
			v.Add("to_sequence", "must not be negative")
		case to != 0 && to < max(from, 1):
			v.Add("to_sequence", "must be 0 (the end of the log) or at least from_sequence")
		}
	})
}

// timestamp checks an optional timestamp field and returns its time, with
// ok false when it is set but invalid.
func timestamp(v *validate.Violations, field string, ts *timestamppb.Timestamp) (t time.Time, ok bool) {
	if ts == nil {
		return time.Time{}, true
	}
	if err := ts.CheckValid(); err != nil {
		v.Add(field, "must be a valid timestamp")
		return time.Time{}, false
	}
	return ts.AsTime(), true
}
