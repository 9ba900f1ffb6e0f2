package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

const testDomain = "test.switchboard.dev"

// detailsOf returns the decoded details of the status st, failing the test
// on a detail that does not decode.
func detailsOf(t *testing.T, st *grpcstatus.Status) []proto.Message {
	t.Helper()
	var out []proto.Message
	for _, d := range st.Details() {
		m, ok := d.(proto.Message)
		if !ok {
			t.Fatalf("detail %v does not decode", d)
		}
		out = append(out, m)
	}
	return out
}

func info(reason string) *errdetails.ErrorInfo {
	return &errdetails.ErrorInfo{Reason: reason, Domain: testDomain}
}

func TestNew(t *testing.T) {
	resource := &errdetails.ResourceInfo{ResourceType: "item", ResourceName: "42"}
	retry := &errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)}
	tests := []struct {
		name        string
		code        codes.Code
		domain      string
		reason      string
		msg         string
		details     []proto.Message
		wantMsg     string
		wantDetails []proto.Message
	}{
		{
			name: "error info comes first", code: codes.NotFound, domain: testDomain, reason: "ITEM_NOT_FOUND", msg: "no such item",
			details:     []proto.Message{resource, retry},
			wantMsg:     "no such item",
			wantDetails: []proto.Message{info("ITEM_NOT_FOUND"), resource, retry},
		},
		{
			name: "no details", code: codes.Aborted, domain: testDomain, reason: "CONFLICT", msg: "conflict",
			wantMsg:     "conflict",
			wantDetails: []proto.Message{info("CONFLICT")},
		},
		{
			name: "empty reason is the code's name", code: codes.FailedPrecondition, domain: testDomain, msg: "m",
			wantMsg:     "m",
			wantDetails: []proto.Message{info("FAILED_PRECONDITION")},
		},
		{
			name: "error info metadata is merged, once", code: codes.NotFound, domain: testDomain, reason: "R", msg: "m",
			details: []proto.Message{
				&errdetails.ErrorInfo{Reason: "IGNORED", Domain: "ignored", Metadata: map[string]string{"a": "1", "b": "1"}},
				retry,
				&errdetails.ErrorInfo{Metadata: map[string]string{"b": "2"}},
			},
			wantMsg: "m",
			wantDetails: []proto.Message{
				&errdetails.ErrorInfo{Reason: "R", Domain: testDomain, Metadata: map[string]string{"a": "1", "b": "2"}},
				retry,
			},
		},
		{
			name: "nil details are skipped", code: codes.NotFound, domain: testDomain, reason: "R", msg: "m",
			details:     []proto.Message{nil, (*errdetails.BadRequest)(nil), resource},
			wantMsg:     "m",
			wantDetails: []proto.Message{info("R"), resource},
		},
		{
			name: "a detail that does not marshal is dropped", code: codes.InvalidArgument, domain: testDomain, reason: "R", msg: "m",
			details: []proto.Message{
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "bad\xff"}}},
				resource,
			},
			wantMsg:     "m",
			wantDetails: []proto.Message{info("R"), resource},
		},
		{
			name: "invalid UTF-8 is replaced", code: codes.InvalidArgument, domain: "d\xff", reason: "R\xff", msg: "m\xff",
			details: []proto.Message{&errdetails.ErrorInfo{Metadata: map[string]string{"k\xff": "v\xff"}}},
			wantMsg: "m\uFFFD",
			wantDetails: []proto.Message{&errdetails.ErrorInfo{
				Reason: "R\uFFFD", Domain: "d\uFFFD", Metadata: map[string]string{"k\uFFFD": "v\uFFFD"},
			}},
		},
	}
	for _, tt := range tests {
		st := New(tt.code, tt.domain, tt.reason, tt.msg, tt.details...)
		if got := st.Code(); got != tt.code {
			t.Errorf("%s: New code = %v, want %v", tt.name, got, tt.code)
		}
		if got := st.Message(); got != tt.wantMsg {
			t.Errorf("%s: New message = %q, want %q", tt.name, got, tt.wantMsg)
		}
		if diff := cmp.Diff(tt.wantDetails, detailsOf(t, st), protocmp.Transform()); diff != "" {
			t.Errorf("%s: New details mismatch (-want +got):\n%s", tt.name, diff)
		}
		// The status must survive the trip to the wire.
		if _, err := proto.Marshal(st.Proto()); err != nil {
			t.Errorf("%s: marshal status: %v", tt.name, err)
		}
	}
}

func TestNewOK(t *testing.T) {
	st := New(codes.OK, testDomain, "R", "fine", &errdetails.RetryInfo{})
	if got := st.Code(); got != codes.OK {
		t.Errorf("New(OK) code = %v, want %v", got, codes.OK)
	}
	if got := len(st.Details()); got != 0 {
		t.Errorf("New(OK) has %d details, want 0", got)
	}
	if err := Error(codes.OK, testDomain, "R", "fine"); err != nil {
		t.Errorf("Error(OK) = %v, want nil", err)
	}
}

func TestConstructors(t *testing.T) {
	v1 := FieldViolation("quantity", "must be positive")
	v2 := FieldViolation("items[1].id", "required")
	p1 := PreconditionViolation("STOCK", "item/42", "3 requested, 1 available")
	ei := func(reason string) *errdetails.ErrorInfo { return info(reason) }
	tests := []struct {
		name        string
		err         error
		wantCode    codes.Code
		wantMsg     string
		wantDetails []proto.Message
	}{
		{
			"InvalidArgument", InvalidArgument(testDomain, "BAD_QUANTITY", "bad request", v1, nil, v2),
			codes.InvalidArgument, "bad request",
			[]proto.Message{ei("BAD_QUANTITY"), &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
				{Field: "quantity", Description: "must be positive"},
				{Field: "items[1].id", Description: "required"},
			}}},
		},
		{
			"InvalidArgument without violations", InvalidArgument(testDomain, "BAD", "bad request"),
			codes.InvalidArgument, "bad request",
			[]proto.Message{ei("BAD"), &errdetails.BadRequest{}},
		},
		{
			"NotFound", NotFound(testDomain, "ITEM_NOT_FOUND", "item", "x"),
			codes.NotFound, `item "x" not found`,
			[]proto.Message{ei("ITEM_NOT_FOUND"), &errdetails.ResourceInfo{ResourceType: "item", ResourceName: "x"}},
		},
		{
			"NotFound without a type", NotFound(testDomain, "GONE", "", "x"),
			codes.NotFound, `resource "x" not found`,
			[]proto.Message{ei("GONE"), &errdetails.ResourceInfo{ResourceName: "x"}},
		},
		{
			"AlreadyExists", AlreadyExists(testDomain, "USER_EXISTS", "user", "ann@example.com"),
			codes.AlreadyExists, `user "ann@example.com" already exists`,
			[]proto.Message{ei("USER_EXISTS"), &errdetails.ResourceInfo{ResourceType: "user", ResourceName: "ann@example.com"}},
		},
		{
			"FailedPrecondition", FailedPrecondition(testDomain, "OUT_OF_STOCK", "not enough stock", p1),
			codes.FailedPrecondition, "not enough stock",
			[]proto.Message{ei("OUT_OF_STOCK"), &errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{
				{Type: "STOCK", Subject: "item/42", Description: "3 requested, 1 available"},
			}}},
		},
		{
			"PermissionDenied", PermissionDenied(testDomain, "NOT_OWNER", "not yours"),
			codes.PermissionDenied, "not yours", []proto.Message{ei("NOT_OWNER")},
		},
		{
			"Unauthenticated", Unauthenticated(testDomain, "TOKEN_EXPIRED", "token expired"),
			codes.Unauthenticated, "token expired", []proto.Message{ei("TOKEN_EXPIRED")},
		},
		{
			"ResourceExhausted", ResourceExhausted(testDomain, "RATE_LIMITED", "slow down", 2*time.Second),
			codes.ResourceExhausted, "slow down",
			[]proto.Message{ei("RATE_LIMITED"), &errdetails.RetryInfo{RetryDelay: durationpb.New(2 * time.Second)}},
		},
		{
			"ResourceExhausted with a negative delay", ResourceExhausted(testDomain, "RATE_LIMITED", "slow down", -time.Second),
			codes.ResourceExhausted, "slow down",
			[]proto.Message{ei("RATE_LIMITED"), &errdetails.RetryInfo{RetryDelay: durationpb.New(0)}},
		},
		{
			"Aborted", Aborted(testDomain, "VERSION_MISMATCH", "conflict"),
			codes.Aborted, "conflict", []proto.Message{ei("VERSION_MISMATCH")},
		},
		{
			"Unavailable with a delay", Unavailable(testDomain, "DRAINING", "try later", 500*time.Millisecond),
			codes.Unavailable, "try later",
			[]proto.Message{ei("DRAINING"), &errdetails.RetryInfo{RetryDelay: durationpb.New(500 * time.Millisecond)}},
		},
		{
			"Unavailable without a delay", Unavailable(testDomain, "DRAINING", "try later", 0),
			codes.Unavailable, "try later", []proto.Message{ei("DRAINING")},
		},
		{
			"Internal", Internal(testDomain),
			codes.Internal, "internal error", []proto.Message{ei("INTERNAL")},
		},
	}
	for _, tt := range tests {
		st, ok := grpcstatus.FromError(tt.err)
		if !ok {
			t.Errorf("%s: FromError(%v) ok = false, want true", tt.name, tt.err)
			continue
		}
		if got := st.Code(); got != tt.wantCode {
			t.Errorf("%s: code = %v, want %v", tt.name, got, tt.wantCode)
		}
		if got := st.Message(); got != tt.wantMsg {
			t.Errorf("%s: message = %q, want %q", tt.name, got, tt.wantMsg)
		}
		if diff := cmp.Diff(tt.wantDetails, detailsOf(t, st), protocmp.Transform()); diff != "" {
			t.Errorf("%s: details mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestHelpersReplaceInvalidUTF8(t *testing.T) {
	err := InvalidArgument(testDomain, "BAD", "bad", FieldViolation("f\xff", "d\xff"))
	want := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: "f\uFFFD", Description: "d\uFFFD"},
	}}
	if diff := cmp.Diff(want, BadRequest(err), protocmp.Transform()); diff != "" {
		t.Errorf("BadRequest(InvalidArgument(invalid UTF-8)) mismatch (-want +got):\n%s", diff)
	}
	err = NotFound(testDomain, "GONE", "item", "x\xff")
	if got, want := ResourceInfo(err).GetResourceName(), "x\uFFFD"; got != want {
		t.Errorf("ResourceInfo(NotFound(invalid UTF-8)).ResourceName = %q, want %q", got, want)
	}
}

func TestInternalNeverLeaks(t *testing.T) {
	const secret = "secret-password"
	cause := fmt.Errorf("open store: %w", errors.New("dial postgres://app:"+secret+"@db:5432"))
	table := &Table{Domain: testDomain, Rules: []Rule{{Is: context.Canceled, Code: codes.Canceled}}}
	for name, err := range map[string]error{
		"Internal":     Internal(testDomain),
		"unmapped Map": table.Map(t.Context(), cause),
	} {
		st := grpcstatus.Convert(err)
		if got, want := st.Code(), codes.Internal; got != want {
			t.Errorf("%s: code = %v, want %v", name, got, want)
		}
		if got, want := st.Message(), "internal error"; got != want {
			t.Errorf("%s: message = %q, want %q", name, got, want)
		}
		wire, merr := proto.Marshal(st.Proto())
		if merr != nil {
			t.Fatalf("%s: marshal status: %v", name, merr)
		}
		if strings.Contains(err.Error(), secret) || bytes.Contains(wire, []byte(secret)) {
			t.Errorf("%s: error %v leaks %q", name, err, secret)
		}
	}
}

// stockError is a typed domain error for the As rule.
type stockError struct{ item string }

func (e *stockError) Error() string { return "out of stock: " + e.item }

var (
	errNotFound = errors.New("not found")
	errSilent   = errors.New("silent")
	errOKRule   = errors.New("rule with code OK")
)

// testTable returns the table the Map tests use, logging to logger.
func testTable(logger *slog.Logger) *Table {
	return &Table{
		Domain: testDomain,
		Logger: logger,
		Rules: []Rule{
			{Is: errNotFound, Code: codes.NotFound, Reason: "ITEM_NOT_FOUND", Message: func(error) string { return "item not found" }},
			{
				As: func(err error) bool {
					var se *stockError
					return errors.As(err, &se)
				},
				Code:   codes.FailedPrecondition,
				Reason: "OUT_OF_STOCK",
				Message: func(err error) string {
					var se *stockError
					errors.As(err, &se)
					return "not enough stock for item " + se.item
				},
				Details: func(err error) []proto.Message {
					var se *stockError
					errors.As(err, &se)
					return []proto.Message{
						&errdetails.ErrorInfo{Metadata: map[string]string{"item": se.item}},
						&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{
							PreconditionViolation("STOCK", "item/"+se.item, "not enough stock"),
						}},
					}
				},
			},
			{Is: errSilent, Code: codes.Aborted, Message: func(error) string { return "" }},
			{Is: errOKRule, Code: codes.OK, Reason: "NEVER"},
			{Code: codes.Unavailable, Reason: "MATCHES_NOTHING"},
		},
	}
}

func TestTableMap(t *testing.T) {
	direct := NotFound("other.switchboard.dev", "USER_NOT_FOUND", "user", "u1")
	downstream := grpcstatus.Error(codes.Unavailable, "payment down")
	tests := []struct {
		name       string
		err        error
		wantNil    bool
		wantSame   bool // Map returns err itself
		wantCode   codes.Code
		wantDomain string
		wantReason string
		wantMsg    string
		wantLogs   int
	}{
		{name: "nil", err: nil, wantNil: true},
		{
			name: "status passes through", err: direct, wantSame: true,
			wantCode: codes.NotFound, wantDomain: "other.switchboard.dev", wantReason: "USER_NOT_FOUND", wantMsg: `user "u1" not found`,
		},
		{
			name: "wrapped status passes through without the wrapping text", err: fmt.Errorf("authorize at 10.0.0.9: %w", downstream),
			wantCode: codes.Unavailable, wantMsg: "payment down",
		},
		{
			name: "canceled", err: context.Canceled,
			wantCode: codes.Canceled, wantDomain: KitDomain, wantReason: "CANCELLED", wantMsg: "request canceled",
		},
		{
			name: "wrapped deadline", err: fmt.Errorf("reserve: %w", context.DeadlineExceeded),
			wantCode: codes.DeadlineExceeded, wantDomain: KitDomain, wantReason: "DEADLINE_EXCEEDED", wantMsg: "deadline exceeded",
		},
		{
			name: "errors.Is rule", err: fmt.Errorf("get item 7: %w", errNotFound),
			wantCode: codes.NotFound, wantDomain: testDomain, wantReason: "ITEM_NOT_FOUND", wantMsg: "item not found",
		},
		{
			name: "As rule", err: fmt.Errorf("reserve: %w", &stockError{item: "42"}),
			wantCode: codes.FailedPrecondition, wantDomain: testDomain, wantReason: "OUT_OF_STOCK", wantMsg: "not enough stock for item 42",
		},
		{
			name: "first matching rule wins", err: errors.Join(&stockError{item: "1"}, errNotFound),
			wantCode: codes.NotFound, wantDomain: testDomain, wantReason: "ITEM_NOT_FOUND", wantMsg: "item not found",
		},
		{
			name: "empty reason and message use the code's", err: errSilent,
			wantCode: codes.Aborted, wantDomain: testDomain, wantReason: "ABORTED", wantMsg: "aborted",
		},
		{
			name: "rule with code OK never matches", err: errOKRule,
			wantCode: codes.Internal, wantDomain: testDomain, wantReason: "INTERNAL", wantMsg: "internal error", wantLogs: 1,
		},
		{
			name: "unmapped", err: errors.New("boom"),
			wantCode: codes.Internal, wantDomain: testDomain, wantReason: "INTERNAL", wantMsg: "internal error", wantLogs: 1,
		},
		{
			name: "status with code OK is not passed through", err: okStatusError{},
			wantCode: codes.Internal, wantDomain: testDomain, wantReason: "INTERNAL", wantMsg: "internal error", wantLogs: 1,
		},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		got := testTable(slog.New(slog.NewJSONHandler(&buf, nil))).Map(t.Context(), tt.err)
		if tt.wantNil {
			if got != nil {
				t.Errorf("%s: Map(%v) = %v, want nil", tt.name, tt.err, got)
			}
			continue
		}
		if tt.wantSame && got != tt.err { //nolint:errorlint // identity, not equivalence, is the point.
			t.Errorf("%s: Map(%v) = %v, want the same error", tt.name, tt.err, got)
		}
		st, ok := grpcstatus.FromError(got)
		if !ok {
			t.Errorf("%s: Map(%v) = %v, not a status", tt.name, tt.err, got)
			continue
		}
		if st.Code() != tt.wantCode {
			t.Errorf("%s: Map(%v) code = %v, want %v", tt.name, tt.err, st.Code(), tt.wantCode)
		}
		if st.Message() != tt.wantMsg {
			t.Errorf("%s: Map(%v) message = %q, want %q", tt.name, tt.err, st.Message(), tt.wantMsg)
		}
		if tt.wantReason != "" || tt.wantDomain != "" {
			ei := Info(got)
			if ei.GetReason() != tt.wantReason || ei.GetDomain() != tt.wantDomain {
				t.Errorf("%s: Map(%v) ErrorInfo = %v, want reason %q domain %q", tt.name, tt.err, ei, tt.wantReason, tt.wantDomain)
			}
		}
		if n := strings.Count(buf.String(), "\n"); n != tt.wantLogs {
			t.Errorf("%s: Map(%v) logged %d records, want %d:\n%s", tt.name, tt.err, n, tt.wantLogs, buf.String())
		}
	}
}

// okStatusError carries a status with code OK, which must not pass as a
// failure's status.
type okStatusError struct{}

func (okStatusError) Error() string                  { return "ok status" }
func (okStatusError) GRPCStatus() *grpcstatus.Status { return grpcstatus.New(codes.OK, "") }

func TestTableMapDetails(t *testing.T) {
	got := testTable(nil).Map(t.Context(), fmt.Errorf("reserve: %w", &stockError{item: "42"}))
	want := []proto.Message{
		&errdetails.ErrorInfo{Reason: "OUT_OF_STOCK", Domain: testDomain, Metadata: map[string]string{"item": "42"}},
		&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{
			{Type: "STOCK", Subject: "item/42", Description: "not enough stock"},
		}},
	}
	if diff := cmp.Diff(want, detailsOf(t, grpcstatus.Convert(got)), protocmp.Transform()); diff != "" {
		t.Errorf("Map(stockError) details mismatch (-want +got):\n%s", diff)
	}
}

func TestTableMapLogsUnmappedOnce(t *testing.T) {
	var buf bytes.Buffer
	table := testTable(slog.New(slog.NewJSONHandler(&buf, nil)))
	err := fmt.Errorf("save order: %w", errors.New("disk full"))
	_ = table.Map(t.Context(), err)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("Map(%v) logged %d records, want 1:\n%s", err, len(lines), buf.String())
	}
	var got map[string]any
	if jerr := json.Unmarshal([]byte(lines[0]), &got); jerr != nil {
		t.Fatalf("log record %q: %v", lines[0], jerr)
	}
	delete(got, slog.TimeKey)
	want := map[string]any{"level": "ERROR", "msg": "unmapped error", "error": "save order: disk full"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Map(%v) log record mismatch (-want +got):\n%s", err, diff)
	}
}

func TestTableMapNilLogger(t *testing.T) {
	got := (&Table{Domain: testDomain}).Map(t.Context(), errors.New("boom"))
	if code := grpcstatus.Code(got); code != codes.Internal {
		t.Errorf("Map(boom) code = %v, want %v", code, codes.Internal)
	}
}

func TestTableMapNilDoesNotAllocate(t *testing.T) {
	table := testTable(slog.New(slog.DiscardHandler))
	ctx := t.Context()
	if got := testing.AllocsPerRun(100, func() {
		if table.Map(ctx, nil) != nil {
			t.Fatal("Map(nil) != nil")
		}
	}); got != 0 {
		t.Errorf("Map(nil) allocations = %v, want 0", got)
	}
}

func TestTableMapConcurrent(t *testing.T) {
	var buf syncBuffer
	table := testTable(slog.New(slog.NewJSONHandler(&buf, nil)))
	const goroutines, calls = 8, 50
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range calls {
				err := fmt.Errorf("call %d/%d: %w", g, i, errNotFound)
				if i%2 == 0 {
					err = fmt.Errorf("call %d/%d failed", g, i)
				}
				got := table.Map(t.Context(), err)
				want := codes.NotFound
				if i%2 == 0 {
					want = codes.Internal
				}
				if code := grpcstatus.Code(got); code != want {
					t.Errorf("Map(%v) code = %v, want %v", err, code, want)
				}
			}
		})
	}
	wg.Wait()
	if got, want := strings.Count(buf.String(), "\n"), goroutines*calls/2; got != want {
		t.Errorf("logged %d records, want %d", got, want)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestReaders(t *testing.T) {
	bad1 := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{FieldViolation("a", "required")}}
	bad2 := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{FieldViolation("b", "too long")}}
	pre := &errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{PreconditionViolation("T", "s", "d")}}
	res := &errdetails.ResourceInfo{ResourceType: "item", ResourceName: "42"}
	retry := &errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)}
	st := New(codes.InvalidArgument, testDomain, "BAD", "bad", bad1, pre, res, retry, bad2)
	err := fmt.Errorf("call inventory: %w", st.Err())

	opt := protocmp.Transform()
	if diff := cmp.Diff(info("BAD"), Info(err), opt); diff != "" {
		t.Errorf("Info(%v) mismatch (-want +got):\n%s", err, diff)
	}
	if got, want := Reason(err), "BAD"; got != want {
		t.Errorf("Reason(%v) = %q, want %q", err, got, want)
	}
	if diff := cmp.Diff(bad1, BadRequest(err), opt); diff != "" {
		t.Errorf("BadRequest(%v) mismatch (-want +got):\n%s", err, diff)
	}
	if diff := cmp.Diff(pre, PreconditionFailure(err), opt); diff != "" {
		t.Errorf("PreconditionFailure(%v) mismatch (-want +got):\n%s", err, diff)
	}
	if diff := cmp.Diff(res, ResourceInfo(err), opt); diff != "" {
		t.Errorf("ResourceInfo(%v) mismatch (-want +got):\n%s", err, diff)
	}
	if got, ok := RetryDelay(err); got != 3*time.Second || !ok {
		t.Errorf("RetryDelay(%v) = %v, %v, want %v, true", err, got, ok, 3*time.Second)
	}
	if diff := cmp.Diff([]*errdetails.BadRequest{bad1, bad2}, Details[*errdetails.BadRequest](err), opt); diff != "" {
		t.Errorf("Details[*BadRequest](%v) mismatch (-want +got):\n%s", err, diff)
	}
	if got := Details[*errdetails.DebugInfo](err); got != nil {
		t.Errorf("Details[*DebugInfo](%v) = %v, want nil", err, got)
	}
	if got, want := len(Details[proto.Message](err)), 6; got != want {
		t.Errorf("len(Details[proto.Message](%v)) = %d, want %d", err, got, want)
	}
}

func TestReadersWithoutDetails(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"nil", nil},
		{"plain error", errors.New("plain")},
		{"wrapped plain error", fmt.Errorf("x: %w", errors.New("plain"))},
		{"status without details", grpcstatus.Error(codes.NotFound, "gone")},
		{"status with a detail of an unknown type", grpcstatus.FromProto(&spb.Status{
			Code:    int32(codes.NotFound),
			Details: []*anypb.Any{{TypeUrl: "type.googleapis.com/no.such.Type", Value: []byte{1, 2}}},
		}).Err()},
		{"status with an undecodable detail", grpcstatus.FromProto(&spb.Status{
			Code:    int32(codes.NotFound),
			Details: []*anypb.Any{{TypeUrl: "type.googleapis.com/google.rpc.ErrorInfo", Value: []byte{0xff, 0xff}}},
		}).Err()},
	}
	for _, tt := range tests {
		if got := Info(tt.err); got != nil {
			t.Errorf("%s: Info(%v) = %v, want nil", tt.name, tt.err, got)
		}
		if got := Reason(tt.err); got != "" {
			t.Errorf("%s: Reason(%v) = %q, want \"\"", tt.name, tt.err, got)
		}
		if got := BadRequest(tt.err); got != nil {
			t.Errorf("%s: BadRequest(%v) = %v, want nil", tt.name, tt.err, got)
		}
		if got := PreconditionFailure(tt.err); got != nil {
			t.Errorf("%s: PreconditionFailure(%v) = %v, want nil", tt.name, tt.err, got)
		}
		if got := ResourceInfo(tt.err); got != nil {
			t.Errorf("%s: ResourceInfo(%v) = %v, want nil", tt.name, tt.err, got)
		}
		if got, ok := RetryDelay(tt.err); got != 0 || ok {
			t.Errorf("%s: RetryDelay(%v) = %v, %v, want 0, false", tt.name, tt.err, got, ok)
		}
		if got := Details[proto.Message](tt.err); got != nil {
			t.Errorf("%s: Details(%v) = %v, want nil", tt.name, tt.err, got)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	withRetry := func(d *durationpb.Duration) error {
		return Error(codes.Unavailable, testDomain, "R", "m", &errdetails.RetryInfo{RetryDelay: d})
	}
	tests := []struct {
		name   string
		err    error
		want   time.Duration
		wantOK bool
	}{
		{"no RetryInfo", Aborted(testDomain, "R", "m"), 0, false},
		{"no delay", withRetry(nil), 0, true},
		{"zero", withRetry(&durationpb.Duration{}), 0, true},
		{"1.5s", withRetry(durationpb.New(1500 * time.Millisecond)), 1500 * time.Millisecond, true},
		{"negative", withRetry(&durationpb.Duration{Seconds: -1}), 0, false},
		{"invalid nanos", withRetry(&durationpb.Duration{Seconds: 1, Nanos: 2e9}), 0, false},
		{"mixed signs", withRetry(&durationpb.Duration{Seconds: 1, Nanos: -1}), 0, false},
		{"beyond time.Duration", withRetry(&durationpb.Duration{Seconds: 315576000000}), math.MaxInt64, true},
	}
	for _, tt := range tests {
		got, ok := RetryDelay(tt.err)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: RetryDelay(%v) = %v, %v, want %v, %v", tt.name, tt.err, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestCodeText(t *testing.T) {
	reason := regexp.MustCompile(`^[A-Z][A-Z0-9_]*[A-Z0-9]$`)
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if got := codeName(c); !reason.MatchString(got) {
			t.Errorf("codeName(%v) = %q, want UPPER_SNAKE_CASE", c, got)
		}
		if got := genericMessage(c); got == "" {
			t.Errorf("genericMessage(%v) = \"\", want a message", c)
		}
	}
	for _, r := range []string{ReasonInternal, ReasonCanceled, ReasonDeadlineExceeded} {
		if !reason.MatchString(r) {
			t.Errorf("reason %q is not UPPER_SNAKE_CASE", r)
		}
	}
	if got, want := codeName(codes.Code(99)), "UNKNOWN"; got != want {
		t.Errorf("codeName(99) = %q, want %q", got, want)
	}
	if got, want := genericMessage(codes.Code(99)), "unknown error"; got != want {
		t.Errorf("genericMessage(99) = %q, want %q", got, want)
	}
}

func TestNonNil(t *testing.T) {
	a, b := new(int), new(int)
	tests := []struct {
		in, want []*int
	}{
		{nil, nil},
		{[]*int{a, b}, []*int{a, b}},
		{[]*int{nil}, []*int{}},
		{[]*int{nil, a, nil, b, nil}, []*int{a, b}},
	}
	for _, tt := range tests {
		if got := nonNil(tt.in); !cmp.Equal(got, tt.want) {
			t.Errorf("nonNil(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func FuzzReadDetails(f *testing.F) {
	for _, err := range []error{
		InvalidArgument(testDomain, "BAD", "bad", FieldViolation("f", "d")),
		NotFound(testDomain, "GONE", "item", "x"),
		FailedPrecondition(testDomain, "STOCK", "m", PreconditionViolation("T", "s", "d")),
		ResourceExhausted(testDomain, "SLOW", "m", time.Second),
		Error(codes.Unavailable, testDomain, "R", "m", &errdetails.RetryInfo{RetryDelay: &durationpb.Duration{Seconds: -5}}),
		Internal(testDomain),
	} {
		b, err := proto.Marshal(grpcstatus.Convert(err).Proto())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x05, 0x1a, 0x04, 0x0a, 0x02, 0x78, 0x79})

	table := &Table{Domain: testDomain, Rules: []Rule{{Is: errNotFound, Code: codes.NotFound}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p spb.Status
		if proto.Unmarshal(data, &p) != nil {
			return
		}
		st := grpcstatus.FromProto(&p)
		for _, err := range []error{st.Err(), fmt.Errorf("wrapped: %w", st.Err())} {
			ei := Info(err)
			if got, want := Reason(err), ei.GetReason(); got != want {
				t.Errorf("Reason(%v) = %q, want Info's %q", err, got, want)
			}
			BadRequest(err)
			PreconditionFailure(err)
			ResourceInfo(err)
			if d, ok := RetryDelay(err); d < 0 || (!ok && d != 0) {
				t.Errorf("RetryDelay(%v) = %v, %v", err, d, ok)
			}
			Details[*errdetails.QuotaFailure](err)
			Details[proto.Message](err)
			mapped := table.Map(t.Context(), err)
			if (mapped == nil) != (err == nil) {
				t.Errorf("Map(%v) = %v", err, mapped)
			}
			if err != nil && grpcstatus.Code(mapped) == codes.OK {
				t.Errorf("Map(%v) code = OK, want a failure", err)
			}
		}
	})
}
