package audit_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/audit/v1"
	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/internal/servicetest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/services/audit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	orderPlaced    = "switchboard.events.v1.OrderPlaced"
	orderCancelled = "switchboard.events.v1.OrderCancelled"
)

// open opens the service on db, closed at the end of the test.
func open(t *testing.T, db *sqldb.DB, cfg audit.Config) *audit.Service {
	t.Helper()
	svc, err := audit.Open(t.Context(), db, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return svc
}

// serve serves svc with the kit's chain on a loopback port and returns
// the connection to it.
func serve(t *testing.T, svc *audit.Service) *grpc.ClientConn {
	t.Helper()
	return servicetest.Serve(t, svc.Register, audit.Policy())
}

// asOperator is the caller of every audit RPC.
func asOperator(ctx context.Context) context.Context {
	return servicetest.AsService(ctx, authz.Operator)
}

// each runs fn on a fresh database of each engine, in parallel.
func each(t *testing.T, fn func(t *testing.T, db *sqldb.DB)) {
	t.Helper()
	sqltest.Each(t, audit.Migrations, audit.MigrationsDir, func(t *testing.T, db *sqldb.DB) {
		t.Parallel()
		fn(t, db)
	})
}

var eventSeq atomic.Int64

// envelope returns an event of type typ (orderPlaced or orderCancelled)
// about subject at time at, with a reason of pad bytes for OrderCancelled.
func envelope(t *testing.T, typ, subject string, at time.Time, pad int) *eventsv1.Envelope {
	t.Helper()
	var msg proto.Message = &eventsv1.OrderPlaced{OrderId: subject, UserId: "u1"}
	if typ == orderCancelled {
		msg = &eventsv1.OrderCancelled{OrderId: subject, UserId: "u1", Reason: strings.Repeat("r", pad)}
	}
	payload, err := anypb.New(msg)
	if err != nil {
		t.Fatal(err)
	}
	return &eventsv1.Envelope{
		Id:   fmt.Sprintf("ev-%d-%d", time.Now().UnixNano(), eventSeq.Add(1)),
		Type: typ, Source: "order", Subject: subject, Time: timestamppb.New(at), Payload: payload,
	}
}

// deliver hands envs to the service as the consumer does: each in a
// transaction of its own, then Wake.
func deliver(t *testing.T, db *sqldb.DB, svc *audit.Service, envs ...*eventsv1.Envelope) {
	t.Helper()
	ctx := t.Context()
	for _, env := range envs {
		if err := db.Tx(ctx, func(tx *sql.Tx) error { return svc.HandleEvent(ctx, tx, env) }); err != nil {
			t.Fatalf("HandleEvent(%s) = %v", env.GetId(), err)
		}
		svc.Wake()
	}
}

// deliverN delivers n OrderPlaced events about subjects s0, s1, s2.
func deliverN(t *testing.T, db *sqldb.DB, svc *audit.Service, n int) []*eventsv1.Envelope {
	t.Helper()
	var envs []*eventsv1.Envelope
	for i := range n {
		envs = append(envs, envelope(t, orderPlaced, fmt.Sprintf("s%d", i%3), time.Now(), 0))
	}
	deliver(t, db, svc, envs...)
	return envs
}

func verify(t *testing.T, c auditv1.AuditServiceClient, req *auditv1.VerifyRequest) *auditv1.VerifyResponse {
	t.Helper()
	resp, err := c.Verify(asOperator(t.Context()), req)
	if err != nil {
		t.Fatalf("Verify(%v) = %v", req, err)
	}
	return resp
}

func TestHandleEventAndVerify(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		svc := open(t, db, audit.Config{VerifyBatch: 3}) // several batches
		c := auditv1.NewAuditServiceClient(serve(t, svc))
		envs := deliverN(t, db, svc, 10)

		// A redelivered event is not recorded twice.
		deliver(t, db, svc, envs[4])

		resp := verify(t, c, &auditv1.VerifyRequest{})
		q, err := c.Query(asOperator(t.Context()), &auditv1.QueryRequest{})
		if err != nil {
			t.Fatal(err)
		}
		recs := q.GetRecords()
		if len(recs) != 10 {
			t.Fatalf("Query = %d records, want 10", len(recs))
		}
		if !resp.GetOk() || resp.GetRecordsChecked() != 10 || string(resp.GetHeadHash()) != string(recs[9].GetHash()) {
			t.Errorf("Verify = %v, want ok, 10 checked, head hash of record 10", resp)
		}
		for i, r := range recs {
			env := envs[i]
			if r.GetSequence() != int64(i+1) || r.GetEventId() != env.GetId() || r.GetEventType() != env.GetType() ||
				r.GetSource() != "order" || r.GetSubject() != env.GetSubject() ||
				!r.GetEventTime().AsTime().Equal(env.GetTime().AsTime().Truncate(time.Microsecond)) {
				t.Errorf("record %d = %v, want event %v", i+1, r, env)
			}
			if want := `"orderId":"` + env.GetSubject() + `"`; !strings.Contains(r.GetPayloadJson(), want) ||
				!strings.Contains(r.GetPayloadJson(), orderPlaced) {
				t.Errorf("record %d payload_json = %s, want the OrderPlaced with %s", i+1, r.GetPayloadJson(), want)
			}
			if i > 0 && string(r.GetPrevHash()) != string(recs[i-1].GetHash()) {
				t.Errorf("record %d prev_hash %x, want %x", i+1, r.GetPrevHash(), recs[i-1].GetHash())
			}
		}
		if sub := verify(t, c, &auditv1.VerifyRequest{FromSequence: 4, ToSequence: 8}); !sub.GetOk() || sub.GetRecordsChecked() != 5 ||
			string(sub.GetHeadHash()) != string(recs[7].GetHash()) {
			t.Errorf("Verify 4..8 = %v, want ok, 5 checked, head hash of record 8", sub)
		}
	})
}

// TestVerifyFindsTampering changes the stored log directly in SQL, as an
// attacker with database access would, and expects Verify to name the
// first record changed.
func TestVerifyFindsTampering(t *testing.T) {
	t.Parallel()
	const records = 10
	tests := []struct {
		name    string
		sql     string
		args    []any
		bad     int64
		reason  string
		partial *auditv1.VerifyRequest // a range that ends before the damage: still ok
	}{
		{"payload", `UPDATE audit_log SET payload = $1 WHERE seq = 4`, []any{[]byte("forged")}, 4, "does not match its hash", &auditv1.VerifyRequest{ToSequence: 3}},
		{"subject", `UPDATE audit_log SET subject = 'other' WHERE seq = 7`, nil, 7, "does not match its hash", &auditv1.VerifyRequest{FromSequence: 1, ToSequence: 6}},
		{"hash", `UPDATE audit_log SET hash = $1 WHERE seq = 6`, []any{strings.Repeat("ab", 32)}, 6, "does not match its hash", nil},
		{"prev hash", `UPDATE audit_log SET prev_hash = $1 WHERE seq = 3`, []any{strings.Repeat("00", 32)}, 3, "does not link", nil},
		{"not hex", `UPDATE audit_log SET hash = 'zz' WHERE seq = 2`, nil, 2, "does not match its hash", nil},
		{"deleted record", `DELETE FROM audit_log WHERE seq = 5`, nil, 5, "missing", &auditv1.VerifyRequest{FromSequence: 7}},
		{"deleted last record", `DELETE FROM audit_log WHERE seq = 10`, nil, 10, "missing", &auditv1.VerifyRequest{ToSequence: 9}},
		{"deleted first record", `DELETE FROM audit_log WHERE seq = 1`, nil, 1, "missing", nil},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			each(t, func(t *testing.T, db *sqldb.DB) {
				svc := open(t, db, audit.Config{VerifyBatch: 4})
				c := auditv1.NewAuditServiceClient(serve(t, svc))
				deliverN(t, db, svc, records)
				if resp := verify(t, c, &auditv1.VerifyRequest{}); !resp.GetOk() {
					t.Fatalf("Verify before tampering = %v, want ok", resp)
				}
				if _, err := db.ExecContext(t.Context(), tc.sql, tc.args...); err != nil {
					t.Fatal(err)
				}
				resp := verify(t, c, &auditv1.VerifyRequest{})
				if resp.GetOk() || resp.GetFirstBadSequence() != tc.bad || !strings.Contains(resp.GetReason(), tc.reason) {
					t.Errorf("Verify after %s = %v, want first bad %d (%s)", tc.name, resp, tc.bad, tc.reason)
				}
				if tc.partial != nil {
					if resp := verify(t, c, tc.partial); !resp.GetOk() {
						t.Errorf("Verify(%v) after %s = %v, want ok: the range ends before the damage", tc.partial, tc.name, resp)
					}
				}
			})
		})
	}
}

func TestQuery(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		svc := open(t, db, audit.Config{})
		c := auditv1.NewAuditServiceClient(serve(t, svc))
		ctx := asOperator(t.Context())
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		// 30 events: types alternate, subjects cycle a, b, c, a minute
		// apart.
		for i := range 30 {
			typ := orderPlaced
			if i%2 == 1 {
				typ = orderCancelled
			}
			deliver(t, db, svc, envelope(t, typ, string(rune('a'+i%3)), t0.Add(time.Duration(i)*time.Minute), 1))
		}
		seqsOf := func(req *auditv1.QueryRequest) []int64 {
			t.Helper()
			var out []int64
			req = proto.CloneOf(req)
			for pages := 0; ; pages++ {
				if pages > 40 {
					t.Fatalf("Query(%v) never ends", req)
				}
				resp, err := c.Query(ctx, req)
				if err != nil {
					t.Fatalf("Query(%v) = %v", req, err)
				}
				if ps := req.GetPageSize(); ps > 0 && len(resp.GetRecords()) > int(ps) {
					t.Fatalf("page of %d records, want at most %d", len(resp.GetRecords()), ps)
				}
				for _, r := range resp.GetRecords() {
					out = append(out, r.GetSequence())
				}
				if resp.GetNextPageToken() == "" {
					return out
				}
				req.PageToken = resp.GetNextPageToken()
			}
		}
		seqs := func(pred func(i int) bool) []int64 {
			var out []int64
			for i := range 30 {
				if pred(i) {
					out = append(out, int64(i+1))
				}
			}
			return out
		}
		tests := []struct {
			name string
			req  *auditv1.QueryRequest
			want []int64
		}{
			{"all", &auditv1.QueryRequest{}, seqs(func(int) bool { return true })},
			{"all in pages of 4", &auditv1.QueryRequest{PageSize: 4}, seqs(func(int) bool { return true })},
			{"type", &auditv1.QueryRequest{EventType: orderCancelled, PageSize: 3}, seqs(func(i int) bool { return i%2 == 1 })},
			{"subject", &auditv1.QueryRequest{Subject: "b", PageSize: 2}, seqs(func(i int) bool { return i%3 == 1 })},
			{"type and subject", &auditv1.QueryRequest{EventType: orderPlaced, Subject: "a"}, seqs(func(i int) bool { return i%2 == 0 && i%3 == 0 })},
			{"time range", &auditv1.QueryRequest{
				StartTime: timestamppb.New(t0.Add(10 * time.Minute)), EndTime: timestamppb.New(t0.Add(15 * time.Minute)), PageSize: 2,
			}, seqs(func(i int) bool { return i >= 10 && i < 15 })},
			{"from a time", &auditv1.QueryRequest{StartTime: timestamppb.New(t0.Add(25 * time.Minute))}, seqs(func(i int) bool { return i >= 25 })},
			{"unknown subject", &auditv1.QueryRequest{Subject: "zzz"}, nil},
		}
		for _, tc := range tests {
			if got := seqsOf(tc.req); !slices.Equal(got, tc.want) {
				t.Errorf("Query %s = %v, want %v", tc.name, got, tc.want)
			}
		}

		// A token is refused with another filter, and garbage is refused.
		first, err := c.Query(ctx, &auditv1.QueryRequest{EventType: orderPlaced, PageSize: 2})
		if err != nil || first.GetNextPageToken() == "" {
			t.Fatalf("Query = %v, %v, want a next page", first, err)
		}
		for name, req := range map[string]*auditv1.QueryRequest{
			"other filter": {EventType: orderCancelled, PageToken: first.GetNextPageToken()},
			"garbage":      {PageToken: "not-a-token"},
		} {
			_, err := c.Query(ctx, req)
			if grpcstatus.Code(err) != codes.InvalidArgument || status.Reason(err) != audit.ReasonInvalidPageToken {
				t.Errorf("Query with a token of %s = %v, want INVALID_ARGUMENT %s", name, err, audit.ReasonInvalidPageToken)
			}
		}
	})
}

// recvN receives n records from a Tail stream.
func recvN(t *testing.T, stream grpc.ServerStreamingClient[auditv1.TailResponse], n int) []int64 {
	t.Helper()
	var out []int64
	for range n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Tail Recv after %v = %v", out, err)
		}
		out = append(out, resp.GetRecord().GetSequence())
	}
	return out
}

// head returns the sequence number of the newest record.
func head(t *testing.T, db *sqldb.DB) int64 {
	t.Helper()
	var seq int64
	if err := db.QueryRowContext(t.Context(), `SELECT seq FROM audit_head WHERE id = 1`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return seq
}

// awaitLive delivers small records until stream, opened with
// after_sequence 0, sends one: such a stream starts after the head as it
// finds it, which the test cannot observe otherwise. It returns the
// sequence number of that first record and of the last one delivered.
func awaitLive(t *testing.T, db *sqldb.DB, svc *audit.Service, stream grpc.ServerStreamingClient[auditv1.TailResponse]) (first, last int64) {
	t.Helper()
	type result struct {
		seq int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := stream.Recv()
		got <- result{resp.GetRecord().GetSequence(), err}
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range 500 {
		deliver(t, db, svc, envelope(t, orderPlaced, "live", time.Now(), 0))
		select {
		case r := <-got:
			if r.err != nil {
				t.Fatalf("live Tail Recv = %v", r.err)
			}
			return r.seq, head(t, db)
		case <-tick.C:
		}
	}
	t.Fatal("a live Tail sent nothing in 10s")
	return 0, 0
}

// TestTail: a Tail stream sends the history after after_sequence, then
// live records, in order, without repeats, filtered by type when asked;
// live records arrive through Wake alone (no resync within the test).
func TestTail(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		svc := open(t, db, audit.Config{TailResync: time.Hour, TailBatch: 2})
		c := auditv1.NewAuditServiceClient(serve(t, svc))
		ctx := asOperator(t.Context())
		deliverN(t, db, svc, 5)

		fromTwo, err := c.Tail(ctx, &auditv1.TailRequest{AfterSequence: 2})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := recvN(t, fromTwo, 3), []int64{3, 4, 5}; !slices.Equal(got, want) {
			t.Errorf("Tail after 2: history %v, want %v", got, want)
		}
		cancelled, err := c.Tail(ctx, &auditv1.TailRequest{AfterSequence: 1, EventTypes: []string{orderCancelled}})
		if err != nil {
			t.Fatal(err)
		}
		liveOnly, err := c.Tail(ctx, &auditv1.TailRequest{})
		if err != nil {
			t.Fatal(err)
		}
		first, last := awaitLive(t, db, svc, liveOnly)
		if first < 6 {
			t.Fatalf("live-only Tail sent record %d, from before it started", first)
		}
		deliver(t, db, svc,
			envelope(t, orderCancelled, "y", time.Now(), 1),
			envelope(t, orderPlaced, "y", time.Now(), 0),
			envelope(t, orderCancelled, "z", time.Now(), 1))
		end := last + 3
		if got, want := recvN(t, fromTwo, int(end-5)), seqRange(6, end); !slices.Equal(got, want) {
			t.Errorf("Tail after 2: live %v, want %v", got, want)
		}
		if got, want := recvN(t, liveOnly, int(end-first)), seqRange(first+1, end); !slices.Equal(got, want) {
			t.Errorf("live-only Tail = %v, want %v", got, want)
		}
		if got, want := recvN(t, cancelled, 2), []int64{last + 1, last + 3}; !slices.Equal(got, want) {
			t.Errorf("Tail of OrderCancelled = %v, want %v", got, want)
		}
	})
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// TestTailTooSlow: a client that stops reading while the log grows is cut
// off with TAIL_TOO_SLOW naming where to resume, and resuming there loses
// nothing. The client's flow-control windows are fixed at 64 KiB, so that
// the server's sends block once it stops reading.
func TestTailTooSlow(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		svc := open(t, db, audit.Config{TailResync: time.Hour, TailBatch: 1, MaxTailLag: 3})
		served := serve(t, svc)
		conn, err := grpc.NewClient(served.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		c := auditv1.NewAuditServiceClient(conn)
		ctx := asOperator(t.Context())

		stream, err := c.Tail(ctx, &auditv1.TailRequest{})
		if err != nil {
			t.Fatal(err)
		}
		first, last := awaitLive(t, db, svc, stream)
		// Records of 200 KiB each, while the client does not read.
		const big = 12
		for range big {
			deliver(t, db, svc, envelope(t, orderCancelled, "x", time.Now(), 200<<10))
		}
		last += big
		var got []int64
		for {
			resp, err := stream.Recv()
			if err == nil {
				got = append(got, resp.GetRecord().GetSequence())
				continue
			}
			if grpcstatus.Code(err) != codes.ResourceExhausted || status.Reason(err) != audit.ReasonTailTooSlow {
				t.Fatalf("slow Tail ended with %v after %v, want RESOURCE_EXHAUSTED %s", err, got, audit.ReasonTailTooSlow)
			}
			resume, perr := strconv.ParseInt(status.Info(err).GetMetadata()[audit.MetadataResumeAfter], 10, 64)
			if perr != nil || resume < first || resume >= last {
				t.Fatalf("slow Tail: resume_after_sequence %d (%v), want between %d and %d", resume, perr, first, last-1)
			}
			if want := seqRange(first+1, resume); !slices.Equal(got, want) {
				t.Errorf("slow Tail sent %v before ending, want %v", got, want)
			}
			again, err := c.Tail(ctx, &auditv1.TailRequest{AfterSequence: resume})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := recvN(t, again, int(last-resume)), seqRange(resume+1, last); !slices.Equal(got, want) {
				t.Errorf("resumed Tail = %v, want %v", got, want)
			}
			return
		}
	})
}

func TestTailLimits(t *testing.T) {
	t.Parallel()
	db := sqltest.New(t, sqldb.SQLite, audit.Migrations, audit.MigrationsDir)
	svc := open(t, db, audit.Config{MaxTailStreams: 1})
	c := auditv1.NewAuditServiceClient(serve(t, svc))
	deliverN(t, db, svc, 2)

	// The first stream holds the only slot once it sent a record.
	s1, err := c.Tail(asOperator(t.Context()), &auditv1.TailRequest{AfterSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	recvN(t, s1, 1)
	s2, err := c.Tail(asOperator(t.Context()), &auditv1.TailRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s2.Recv()
	if grpcstatus.Code(err) != codes.ResourceExhausted || status.Reason(err) != audit.ReasonTooManyStreams {
		t.Errorf("second Tail = %v, want RESOURCE_EXHAUSTED %s", err, audit.ReasonTooManyStreams)
	}
	if d, ok := status.RetryDelay(err); !ok || d <= 0 {
		t.Errorf("second Tail retry delay = %v, %v, want one", d, ok)
	}

	// Close ends the open stream, and refuses new ones, with UNAVAILABLE.
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = s1.Recv()
	if grpcstatus.Code(err) != codes.Unavailable || status.Reason(err) != audit.ReasonShuttingDown {
		t.Errorf("open Tail after Close = %v, want UNAVAILABLE %s", err, audit.ReasonShuttingDown)
	}
	s3, err := c.Tail(asOperator(t.Context()), &auditv1.TailRequest{AfterSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = s3.Recv(); grpcstatus.Code(err) != codes.Unavailable {
		t.Errorf("new Tail after Close = %v, want UNAVAILABLE", err)
	}
}

func TestHandleEventRefusesBadEnvelopes(t *testing.T) {
	t.Parallel()
	db := sqltest.New(t, sqldb.SQLite, audit.Migrations, audit.MigrationsDir)
	svc := open(t, db, audit.Config{})
	ctx := t.Context()
	good := envelope(t, orderPlaced, "o", time.Now(), 0)
	with := func(change func(e *eventsv1.Envelope)) *eventsv1.Envelope {
		e := proto.CloneOf(good)
		change(e)
		return e
	}
	tests := []struct {
		name string
		env  *eventsv1.Envelope
	}{
		{"nil", nil},
		{"no id", with(func(e *eventsv1.Envelope) { e.Id = "" })},
		{"no type", with(func(e *eventsv1.Envelope) { e.Type = "" })},
		{"long subject", with(func(e *eventsv1.Envelope) { e.Subject = strings.Repeat("s", audit.MaxFieldLen+1) })},
		{"invalid time", with(func(e *eventsv1.Envelope) { e.Time = &timestamppb.Timestamp{Nanos: -1} })},
		{"too large", envelope(t, orderCancelled, "o", time.Now(), audit.MaxEnvelopeBytes)},
	}
	for _, tc := range tests {
		err := db.Tx(ctx, func(tx *sql.Tx) error { return svc.HandleEvent(ctx, tx, tc.env) })
		if !errors.Is(err, events.ErrPermanent) {
			t.Errorf("HandleEvent(%s) = %v, want events.ErrPermanent", tc.name, err)
		}
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_log`).Scan(&n); err != nil || n != 0 {
		t.Errorf("records after refused events = %d, %v, want 0", n, err)
	}
	if got := svc.EventTypes(); got != nil {
		t.Errorf("EventTypes() = %v, want nil (every type)", got)
	}
}

func TestAuthorization(t *testing.T) {
	t.Parallel()
	db := sqltest.New(t, sqldb.SQLite, audit.Migrations, audit.MigrationsDir)
	svc := open(t, db, audit.Config{})
	c := auditv1.NewAuditServiceClient(serve(t, svc))
	deliverN(t, db, svc, 2)
	calls := map[string]func(ctx context.Context) error{
		"Query": func(ctx context.Context) error { _, err := c.Query(ctx, &auditv1.QueryRequest{}); return err },
		"Verify": func(ctx context.Context) error {
			_, err := c.Verify(ctx, &auditv1.VerifyRequest{})
			return err
		},
		"Tail": func(ctx context.Context) error {
			stream, err := c.Tail(ctx, &auditv1.TailRequest{AfterSequence: 1})
			if err != nil {
				return err
			}
			_, err = stream.Recv() // record 2 is enough
			return err
		},
	}
	type caller struct{ service, user string }
	tests := []struct {
		caller caller
		reason string // "" when allowed
	}{
		{caller{service: authz.Operator}, ""},
		{caller{service: "gateway"}, authz.ReasonMethodNotAllowed},
		{caller{service: "gateway", user: "u1"}, authz.ReasonMethodNotAllowed},
		{caller{service: "order"}, authz.ReasonMethodNotAllowed},
		{caller{}, authz.ReasonServiceRequired},
	}
	for method, call := range calls {
		for _, tc := range tests {
			err := call(servicetest.As(t.Context(), tc.caller.service, tc.caller.user, "admin"))
			if tc.reason == "" {
				if err != nil {
					t.Errorf("%s by %+v = %v, want allowed", method, tc.caller, err)
				}
				continue
			}
			if grpcstatus.Code(err) != codes.PermissionDenied || status.Reason(err) != tc.reason {
				t.Errorf("%s by %+v = %v (reason %q), want PERMISSION_DENIED %s", method, tc.caller, err, status.Reason(err), tc.reason)
			}
		}
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	db := sqltest.New(t, sqldb.SQLite, audit.Migrations, audit.MigrationsDir)
	c := auditv1.NewAuditServiceClient(serve(t, open(t, db, audit.Config{})))
	ctx := asOperator(t.Context())
	now := time.Now()
	tests := []struct {
		name string
		call func() error
		want []string
	}{
		{"query", func() error {
			_, err := c.Query(ctx, &auditv1.QueryRequest{
				EventType: strings.Repeat("t", audit.MaxFieldLen+1), Subject: strings.Repeat("s", audit.MaxFieldLen+1),
				StartTime: timestamppb.New(now), EndTime: timestamppb.New(now), PageSize: audit.MaxPageSize + 1,
				PageToken: strings.Repeat("p", audit.MaxPageTokenLen+1),
			})
			return err
		}, []string{"event_type", "subject", "end_time", "page_size", "page_token"}},
		{"query bad time", func() error {
			_, err := c.Query(ctx, &auditv1.QueryRequest{StartTime: &timestamppb.Timestamp{Nanos: -1}, PageSize: -1})
			return err
		}, []string{"start_time", "page_size"}},
		{"verify", func() error {
			_, err := c.Verify(ctx, &auditv1.VerifyRequest{FromSequence: 5, ToSequence: 4})
			return err
		}, []string{"to_sequence"}},
		{"verify negative", func() error {
			_, err := c.Verify(ctx, &auditv1.VerifyRequest{FromSequence: -1, ToSequence: -1})
			return err
		}, []string{"from_sequence", "to_sequence"}},
		{"tail", func() error {
			stream, err := c.Tail(ctx, &auditv1.TailRequest{AfterSequence: -1, EventTypes: []string{"", orderPlaced}})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}, []string{"after_sequence", "event_types[0]"}},
	}
	for _, tc := range tests {
		err := tc.call()
		if got, want := grpcstatus.Code(err), codes.InvalidArgument; got != want {
			t.Errorf("%s = %v, want %v", tc.name, err, want)
			continue
		}
		var got []string
		for _, v := range status.BadRequest(err).GetFieldViolations() {
			got = append(got, v.GetField())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: violations of %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	t.Parallel()
	db := sqltest.New(t, sqldb.SQLite, nil, "")
	for _, cfg := range []audit.Config{
		{TailResync: -time.Second},
		{MaxTailStreams: -1},
		{TailBatch: audit.MaxTailBatch + 1},
		{VerifyBatch: -1},
		{MaxTailLag: -1},
	} {
		if svc, err := audit.Open(t.Context(), db, cfg, nil); err == nil {
			_ = svc.Close()
			t.Errorf("Open(%+v) succeeded, want an error", cfg)
		}
	}
}
