package notify_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	notifyv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/notify/v1"
	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/internal/servicetest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/services/notify"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// open opens the service on db, closed at the end of the test.
func open(t *testing.T, db *sqldb.DB, cfg notify.Config) *notify.Service {
	t.Helper()
	svc, err := notify.Open(t.Context(), db, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return svc
}

// serve serves svc with the kit's chain (validation, test authentication,
// the service's policy) on a loopback port and returns a client of it.
func serve(t *testing.T, svc *notify.Service) notifyv1.NotifyServiceClient {
	t.Helper()
	return notifyv1.NewNotifyServiceClient(servicetest.Serve(t, svc.Register, notify.Policy()))
}

// each runs fn on a fresh database of each engine, in parallel.
func each(t *testing.T, fn func(t *testing.T, db *sqldb.DB)) {
	t.Helper()
	sqltest.Each(t, notify.Migrations, notify.MigrationsDir, func(t *testing.T, db *sqldb.DB) {
		t.Parallel()
		fn(t, db)
	})
}

func sqliteDB(t *testing.T) *sqldb.DB {
	t.Helper()
	return sqltest.New(t, sqldb.SQLite, notify.Migrations, notify.MigrationsDir)
}

// envelope wraps msg as its service would publish it.
func envelope(t *testing.T, msg proto.Message) *eventsv1.Envelope {
	t.Helper()
	payload, err := anypb.New(msg)
	if err != nil {
		t.Fatal(err)
	}
	return &eventsv1.Envelope{
		Id: uuid.NewString(), Type: string(msg.ProtoReflect().Descriptor().FullName()), Source: "test",
		Subject: "s", Time: timestamppb.Now(), Payload: payload,
	}
}

// handle hands env to the service as the consumer does: in a transaction
// of its own, then Wake after the commit.
func handle(t *testing.T, db *sqldb.DB, svc *notify.Service, env *eventsv1.Envelope) error {
	t.Helper()
	ctx := t.Context()
	if err := db.Tx(ctx, func(tx *sql.Tx) error { return svc.HandleEvent(ctx, tx, env) }); err != nil {
		return err
	}
	svc.Wake()
	return nil
}

func mustHandle(t *testing.T, db *sqldb.DB, svc *notify.Service, msgs ...proto.Message) {
	t.Helper()
	for _, m := range msgs {
		if err := handle(t, db, svc, envelope(t, m)); err != nil {
			t.Fatalf("HandleEvent(%T) = %v", m, err)
		}
	}
}

// waitDone waits up to 10s until n notifications of the user are
// finished (SENT or FAILED), and fails if there are more.
func waitDone(t *testing.T, db *sqldb.DB, userID string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var done int
		if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM notifications
			WHERE user_id = $1 AND status <> 'PENDING'`, userID).Scan(&done); err != nil {
			t.Fatal(err)
		}
		switch {
		case done == n:
			return
		case done > n:
			t.Fatalf("%d notifications of %s finished, want %d", done, userID, n)
		case time.Now().After(deadline):
			t.Fatalf("%d notifications of %s finished after 10s, want %d", done, userID, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// count returns the notifications of an event.
func count(t *testing.T, db *sqldb.DB, eventID string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM notifications WHERE event_id = $1`, eventID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func asUser(ctx context.Context, userID string) context.Context {
	return servicetest.As(ctx, "gateway", userID, "customer")
}

// message is a parsed .eml file or SMTP message.
type message struct {
	header mail.Header
	body   string
}

func parseMessage(t *testing.T, data []byte) message {
	t.Helper()
	if strings.Contains(strings.ReplaceAll(string(data), "\r\n", ""), "\n") {
		t.Errorf("message has a bare LF line end:\n%s", data)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(data)))
	if err != nil {
		t.Fatalf("ReadMessage: %v\n%s", err, data)
	}
	if got := m.Header.Get("Content-Transfer-Encoding"); got != "quoted-printable" {
		t.Fatalf("Content-Transfer-Encoding = %q, want quoted-printable", got)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(m.Body))
	if err != nil {
		t.Fatal(err)
	}
	return message{header: m.Header, body: strings.ReplaceAll(string(body), "\r\n", "\n")}
}

func (m message) subject(t *testing.T) string {
	t.Helper()
	s, err := new(mime.WordDecoder).DecodeHeader(m.header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTemplatesRender(t *testing.T) {
	t.Parallel()
	tpl, err := notify.ParseTemplates()
	if err != nil {
		t.Fatal(err)
	}
	base := notify.TemplateData{Shop: "Test Shop", Name: "Ada Lovelace", Email: "ada@example.com"}
	with := func(change func(*notify.TemplateData)) notify.TemplateData {
		d := base
		change(&d)
		return d
	}
	tests := []struct {
		template string
		data     notify.TemplateData
		subject  string
		body     []string
	}{
		{notify.TemplateWelcome, base, "Welcome to Test Shop, Ada Lovelace",
			[]string{"Hello Ada Lovelace,", "Your account for ada@example.com is ready", "— Test Shop"}},
		{notify.TemplateOrderConfirmed, with(func(d *notify.TemplateData) { d.OrderID, d.Total, d.ShipmentID = "o-1", "12.50 EUR", "sh-1" }),
			"Your order o-1 is confirmed", []string{"order o-1", "charged 12.50 EUR", "Shipment: sh-1."}},
		{notify.TemplateOrderCancelled, with(func(d *notify.TemplateData) { d.OrderID, d.Reason = "o-2", "payment declined" }),
			"Your order o-2 was cancelled", []string{"order o-2 was cancelled: payment declined."}},
		{notify.TemplateShipmentDelivered, with(func(d *notify.TemplateData) {
			d.OrderID, d.ShipmentID, d.Description = "o-3", "sh-3", "Left at the door"
		}),
			"Your order o-3 has been delivered", []string{"(shipment sh-3)", "Carrier's note: Left at the door"}},
		// A name with a line break cannot add a header.
		{notify.TemplateWelcome, with(func(d *notify.TemplateData) { d.Name = "Eve\r\nBcc: victim@example.com" }),
			"Welcome to Test Shop, Eve Bcc: victim@example.com", []string{"Hello Eve"}},
		{notify.TemplateWelcome, with(func(d *notify.TemplateData) { d.Name = strings.Repeat("n", 300) }),
			"Welcome to Test Shop, " + strings.Repeat("n", notify.MaxSubjectLen-len("Welcome to Test Shop, ")-1) + "…", nil},
	}
	for _, tc := range tests {
		subject, body, err := tpl.Render(tc.template, tc.data)
		if err != nil {
			t.Errorf("Render(%s) = %v", tc.template, err)
			continue
		}
		if subject != tc.subject {
			t.Errorf("Render(%s) subject = %q, want %q", tc.template, subject, tc.subject)
		}
		for _, want := range tc.body {
			if !strings.Contains(body, want) {
				t.Errorf("Render(%s) body = %q, want it to contain %q", tc.template, body, want)
			}
		}
		if strings.Contains(body, "\r") || strings.Contains(body, "<no value>") {
			t.Errorf("Render(%s) body = %q, want \\n line ends and every field set", tc.template, body)
		}
	}
	if _, _, err := tpl.Render("nope", base); err == nil {
		t.Error("Render of an unknown template succeeded")
	}
}

// TestSendsFiles runs the whole path on each engine: events handled in
// transactions, the sender loop woken after each commit (its poll is an
// hour), one .eml file per notification, and ListNotifications.
func TestSendsFiles(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		dir := filepath.Join(t.TempDir(), "mail")
		svc := open(t, db, notify.Config{MailDir: dir, PollInterval: time.Hour})
		c := serve(t, svc)
		user, order, order2 := newID("user"), newID("order"), newID("order")
		mustHandle(t, db, svc,
			&eventsv1.UserRegistered{UserId: user, Email: "ada@example.com", DisplayName: "Ada Lovelace"},
			&eventsv1.OrderPlaced{OrderId: order, UserId: user},
			&eventsv1.OrderConfirmed{OrderId: order, UserId: user, ShipmentId: "sh-1", Total: &typev1.Money{AmountMinor: 1250, CurrencyCode: "EUR"}},
			&eventsv1.ShipmentStatusChanged{ShipmentId: "sh-1", OrderId: order, Status: shippingv1.ShipmentStatus_SHIPMENT_STATUS_IN_TRANSIT},
			&eventsv1.ShipmentStatusChanged{ShipmentId: "sh-1", OrderId: order, Status: shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED,
				Description: "Left with the neighbour"},
			&eventsv1.OrderCancelled{OrderId: order2, UserId: user, Reason: "payment declined"},
		)
		waitDone(t, db, user, 4)

		resp, err := c.ListNotifications(asUser(t.Context(), user), &notifyv1.ListNotificationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{
			notify.TemplateWelcome:           {"Welcome to Switchboard Shop, Ada Lovelace", "Your account for ada@example.com"},
			notify.TemplateOrderConfirmed:    {"Your order " + order + " is confirmed", "charged 12.50 EUR"},
			notify.TemplateShipmentDelivered: {"Your order " + order + " has been delivered", "Carrier's note: Left with the neighbour"},
			notify.TemplateOrderCancelled:    {"Your order " + order2 + " was cancelled", "cancelled: payment declined"},
		}
		if len(resp.GetNotifications()) != len(want) {
			t.Fatalf("ListNotifications = %d notifications, want %d", len(resp.GetNotifications()), len(want))
		}
		for _, n := range resp.GetNotifications() {
			w, ok := want[n.GetTemplate()]
			if !ok {
				t.Errorf("unexpected notification %v", n)
				continue
			}
			delete(want, n.GetTemplate())
			if n.GetStatus() != notifyv1.NotificationStatus_NOTIFICATION_STATUS_SENT || n.GetUserId() != user ||
				n.GetRecipient() != "ada@example.com" || n.GetChannel() != "email" || n.GetSubject() != w[0] || n.GetError() != "" {
				t.Errorf("notification %v, want SENT to ada@example.com with subject %q", n, w[0])
			}
			data, err := os.ReadFile(filepath.Join(dir, n.GetNotificationId()+".eml"))
			if err != nil {
				t.Errorf("no file for notification %s: %v", n.GetNotificationId(), err)
				continue
			}
			m := parseMessage(t, data)
			if got := m.subject(t); got != w[0] {
				t.Errorf("%s: Subject = %q, want %q", n.GetTemplate(), got, w[0])
			}
			if got, want := m.header.Get("To"), `"Ada Lovelace" <ada@example.com>`; got != want {
				t.Errorf("%s: To = %q, want %q", n.GetTemplate(), got, want)
			}
			if got, want := m.header.Get("From"), `"Switchboard Shop" <shop@switchboard.local>`; got != want {
				t.Errorf("%s: From = %q, want %q", n.GetTemplate(), got, want)
			}
			if got, want := m.header.Get("Message-Id"), "<"+n.GetNotificationId()+"@switchboard.local>"; got != want {
				t.Errorf("%s: Message-ID = %q, want %q", n.GetTemplate(), got, want)
			}
			if _, err := m.header.Date(); err != nil {
				t.Errorf("%s: Date: %v", n.GetTemplate(), err)
			}
			if !strings.Contains(m.body, w[1]) {
				t.Errorf("%s: body = %q, want it to contain %q", n.GetTemplate(), m.body, w[1])
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if len(names) != 4 || slices.ContainsFunc(names, func(n string) bool { return !strings.HasSuffix(n, ".eml") }) {
			t.Errorf("mail directory holds %v, want the 4 .eml files and nothing else", names)
		}
	})
}

// TestUnknownRecipient: an event about a user or order not known yet is a
// transient failure that records nothing; once the missing event is
// handled, the redelivery succeeds.
func TestUnknownRecipient(t *testing.T) {
	t.Parallel()
	db := sqliteDB(t)
	svc := open(t, db, notify.Config{MailDir: t.TempDir(), PollInterval: time.Hour})
	user, order := newID("user"), newID("order")
	delivered := &eventsv1.ShipmentStatusChanged{ShipmentId: "sh", OrderId: order, Status: shippingv1.ShipmentStatus_SHIPMENT_STATUS_DELIVERED}
	tests := []struct {
		name   string
		before []proto.Message // handled first
		event  proto.Message
	}{
		{"order of an unknown user", nil, &eventsv1.OrderConfirmed{OrderId: newID("order"), UserId: user}},
		{"cancel of an unknown user", nil, &eventsv1.OrderCancelled{OrderId: newID("order"), UserId: user}},
		{"delivery of an unknown order", nil, delivered},
		{"delivery to an unknown user", []proto.Message{&eventsv1.OrderPlaced{OrderId: order, UserId: user}}, delivered},
	}
	var retry []*eventsv1.Envelope
	for _, tc := range tests {
		mustHandle(t, db, svc, tc.before...)
		env := envelope(t, tc.event)
		err := handle(t, db, svc, env)
		if !errors.Is(err, notify.ErrUnknownRecipient) || errors.Is(err, events.ErrPermanent) {
			t.Errorf("HandleEvent(%s) = %v, want a transient ErrUnknownRecipient", tc.name, err)
		}
		if n := count(t, db, env.GetId()); n != 0 {
			t.Errorf("%s: %d notifications recorded, want none", tc.name, n)
		}
		retry = append(retry, env)
	}
	mustHandle(t, db, svc, &eventsv1.UserRegistered{UserId: user, Email: "u@example.com"})
	for i, env := range retry {
		if err := handle(t, db, svc, env); err != nil {
			t.Errorf("redelivery of %s = %v, want success", tests[i].name, err)
		}
		if n := count(t, db, env.GetId()); n != 1 {
			t.Errorf("redelivery of %s recorded %d notifications, want 1", tests[i].name, n)
		}
	}
}

func TestPermanentAndIgnoredEvents(t *testing.T) {
	t.Parallel()
	db := sqliteDB(t)
	svc := open(t, db, notify.Config{MailDir: t.TempDir(), PollInterval: time.Hour})
	good := envelope(t, &eventsv1.UserRegistered{UserId: "u1", Email: "u1@example.com"})
	with := func(change func(e *eventsv1.Envelope)) *eventsv1.Envelope {
		e := proto.CloneOf(good)
		change(e)
		return e
	}
	mismatched, err := anypb.New(&eventsv1.OrderPlaced{OrderId: "o", UserId: "u"})
	if err != nil {
		t.Fatal(err)
	}
	permanent := []struct {
		name string
		env  *eventsv1.Envelope
	}{
		{"nil envelope", nil},
		{"no payload", with(func(e *eventsv1.Envelope) { e.Payload = nil })},
		{"payload of another type", with(func(e *eventsv1.Envelope) { e.Payload = mismatched })},
		{"undecodable payload", with(func(e *eventsv1.Envelope) { e.Payload.Value = []byte{0xff, 0xff} })},
		{"no id", with(func(e *eventsv1.Envelope) { e.Id = "" })},
		{"no user id", envelope(t, &eventsv1.UserRegistered{Email: "x@example.com"})},
		{"no e-mail", envelope(t, &eventsv1.UserRegistered{UserId: "u2"})},
		{"no order id", envelope(t, &eventsv1.OrderConfirmed{UserId: "u1"})},
		{"long user id", envelope(t, &eventsv1.OrderCancelled{OrderId: "o", UserId: strings.Repeat("u", notify.MaxIDLen+1)})},
	}
	for _, tc := range permanent {
		if err := handle(t, db, svc, tc.env); !errors.Is(err, events.ErrPermanent) {
			t.Errorf("HandleEvent(%s) = %v, want events.ErrPermanent", tc.name, err)
		}
	}
	ignored := []*eventsv1.Envelope{
		envelope(t, &eventsv1.StockChanged{ItemId: "i"}),
		envelope(t, &eventsv1.ShipmentStatusChanged{ShipmentId: "sh", OrderId: "unknown", Status: shippingv1.ShipmentStatus_SHIPMENT_STATUS_PICKED_UP}),
	}
	for _, env := range ignored {
		if err := handle(t, db, svc, env); err != nil || count(t, db, env.GetId()) != 0 {
			t.Errorf("HandleEvent(%s) = %v, want ignored", env.GetType(), err)
		}
	}
	if got := svc.EventTypes(); !slices.Contains(got, "switchboard.events.v1.UserRegistered") ||
		!slices.Contains(got, "switchboard.events.v1.ShipmentStatusChanged") || slices.Contains(got, "switchboard.events.v1.StockChanged") {
		t.Errorf("EventTypes() = %v", got)
	}
}

// TestRedeliveryRecordsOnce: handling the same event twice (as after a
// lost acknowledgement) records and sends one notification.
func TestRedeliveryRecordsOnce(t *testing.T) {
	t.Parallel()
	db := sqliteDB(t)
	dir := t.TempDir()
	svc := open(t, db, notify.Config{MailDir: dir, PollInterval: time.Hour})
	user := newID("user")
	env := envelope(t, &eventsv1.UserRegistered{UserId: user, Email: "r@example.com"})
	for range 2 {
		if err := handle(t, db, svc, env); err != nil {
			t.Fatal(err)
		}
	}
	waitDone(t, db, user, 1)
	if n := count(t, db, env.GetId()); n != 1 {
		t.Errorf("%d notifications for one event, want 1", n)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Errorf("mail directory has %d files, %v; want 1", len(entries), err)
	}
}

// scriptedSender is a Sender for the sender loop's tests: it answers each
// attempt at a message with the next error of its script (nil once the
// script runs out) and counts the attempts.
type scriptedSender struct {
	script []error
	mu     sync.Mutex
	calls  map[string]int
}

func (s *scriptedSender) Send(_ context.Context, m *notify.Mail) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	i := s.calls[m.To]
	s.calls[m.To]++
	if i < len(s.script) {
		return s.script[i]
	}
	return nil
}

// TestSenderLoopOutcomes: retries with backoff until sent; gives up after
// MaxAttempts transient failures; gives up at once on a rejection.
func TestSenderLoopOutcomes(t *testing.T) {
	t.Parallel()
	transient := errors.New("421 service not available")
	tests := []struct {
		name     string
		script   []error
		status   notifyv1.NotificationStatus
		attempts int
		err      string
	}{
		{"sent after retries", []error{transient, transient}, notifyv1.NotificationStatus_NOTIFICATION_STATUS_SENT, 3, ""},
		{"gives up after max attempts", []error{transient, transient, transient, transient}, notifyv1.NotificationStatus_NOTIFICATION_STATUS_FAILED, 4, "421 service not available"},
		{"rejected", []error{errors.Join(notify.ErrRejected, errors.New("550 no such user"))}, notifyv1.NotificationStatus_NOTIFICATION_STATUS_FAILED, 1, "550 no such user"},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			db := sqliteDB(t)
			sender := &scriptedSender{script: tc.script}
			svc := open(t, db, notify.Config{Sender: sender, MaxAttempts: 4, PollInterval: 2 * time.Millisecond,
				RetryBackoff: time.Millisecond, MaxRetryBackoff: 4 * time.Millisecond})
			c := serve(t, svc)
			user := newID("user")
			mustHandle(t, db, svc, &eventsv1.UserRegistered{UserId: user, Email: "loop@example.com"})
			waitDone(t, db, user, 1)
			resp, err := c.ListNotifications(asUser(t.Context(), user), &notifyv1.ListNotificationsRequest{})
			if err != nil || len(resp.GetNotifications()) != 1 {
				t.Fatalf("ListNotifications = %v, %v, want one", resp, err)
			}
			n := resp.GetNotifications()[0]
			if n.GetStatus() != tc.status || !strings.Contains(n.GetError(), tc.err) || (tc.err == "") != (n.GetError() == "") {
				t.Errorf("notification %v %q, want %v with error %q", n.GetStatus(), n.GetError(), tc.status, tc.err)
			}
			var attempts int
			if err := db.QueryRowContext(t.Context(), `SELECT attempts FROM notifications WHERE notification_id = $1`,
				n.GetNotificationId()).Scan(&attempts); err != nil {
				t.Fatal(err)
			}
			sender.mu.Lock()
			calls := sender.calls["loop@example.com"]
			sender.mu.Unlock()
			if attempts != tc.attempts || calls != tc.attempts {
				t.Errorf("attempts = %d recorded, %d made; want %d", attempts, calls, tc.attempts)
			}
		})
	}
}

// TestInvalidAddressFails: a user registered with an address that is not
// one gets a FAILED notification saying so, without an attempt to send.
func TestInvalidAddressFails(t *testing.T) {
	t.Parallel()
	db := sqliteDB(t)
	sender := &scriptedSender{}
	svc := open(t, db, notify.Config{Sender: sender, PollInterval: time.Hour})
	c := serve(t, svc)
	user := newID("user")
	mustHandle(t, db, svc, &eventsv1.UserRegistered{UserId: user, Email: "not an address", DisplayName: "Nobody"})
	waitDone(t, db, user, 1)
	resp, err := c.ListNotifications(asUser(t.Context(), user), &notifyv1.ListNotificationsRequest{})
	if err != nil || len(resp.GetNotifications()) != 1 {
		t.Fatalf("ListNotifications = %v, %v, want one", resp, err)
	}
	n := resp.GetNotifications()[0]
	if n.GetStatus() != notifyv1.NotificationStatus_NOTIFICATION_STATUS_FAILED || !strings.Contains(n.GetError(), "recipient") {
		t.Errorf("notification %v %q, want FAILED naming the recipient", n.GetStatus(), n.GetError())
	}
	sender.mu.Lock()
	defer sender.mu.Unlock()
	if len(sender.calls) != 0 {
		t.Errorf("sender called %v, want never", sender.calls)
	}
}

// TestPendingSurvivesRestart: a notification stored while no sender loop
// runs is sent by the next instance: nothing is lost between the commit
// and the send.
func TestPendingSurvivesRestart(t *testing.T) {
	t.Parallel()
	db := sqliteDB(t)
	dir := t.TempDir()
	first := open(t, db, notify.Config{MailDir: dir, PollInterval: time.Hour})
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	user := newID("user")
	mustHandle(t, db, first, &eventsv1.UserRegistered{UserId: user, Email: "later@example.com"})
	time.Sleep(20 * time.Millisecond)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a closed service sent %d messages", len(entries))
	}
	open(t, db, notify.Config{MailDir: dir, PollInterval: time.Hour}) // sends what is due at start
	waitDone(t, db, user, 1)
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Errorf("mail directory has %d files, %v; want 1", len(entries), err)
	}
}

func TestListNotifications(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, db *sqldb.DB) {
		svc := open(t, db, notify.Config{MailDir: t.TempDir(), PollInterval: time.Hour})
		c := serve(t, svc)
		alice, bob := newID("alice"), newID("bob")
		mustHandle(t, db, svc,
			&eventsv1.UserRegistered{UserId: alice, Email: "alice@example.com", DisplayName: "Alice"},
			&eventsv1.UserRegistered{UserId: bob, Email: "bob@example.com", DisplayName: "Bob"})
		for range 6 {
			mustHandle(t, db, svc, &eventsv1.OrderConfirmed{OrderId: newID("order"), UserId: alice})
		}
		mustHandle(t, db, svc, &eventsv1.OrderCancelled{OrderId: newID("order"), UserId: bob, Reason: "changed my mind"})
		waitDone(t, db, alice, 7)
		waitDone(t, db, bob, 2)

		list := func(ctx context.Context, req *notifyv1.ListNotificationsRequest) []*notifyv1.Notification {
			t.Helper()
			var out []*notifyv1.Notification
			req = proto.CloneOf(req)
			for pages := 0; ; pages++ {
				if pages > 20 {
					t.Fatal("ListNotifications never ends")
				}
				resp, err := c.ListNotifications(ctx, req)
				if err != nil {
					t.Fatalf("ListNotifications(%v) = %v", req, err)
				}
				if ps := req.GetPageSize(); ps > 0 && len(resp.GetNotifications()) > int(ps) {
					t.Fatalf("page of %d, want at most %d", len(resp.GetNotifications()), ps)
				}
				out = append(out, resp.GetNotifications()...)
				if resp.GetNextPageToken() == "" {
					return out
				}
				req.PageToken = resp.GetNextPageToken()
			}
		}
		check := func(name string, got []*notifyv1.Notification, users map[string]int) {
			t.Helper()
			seen := map[string]bool{}
			byUser := map[string]int{}
			for i, n := range got {
				if seen[n.GetNotificationId()] {
					t.Errorf("%s: notification %s listed twice", name, n.GetNotificationId())
				}
				seen[n.GetNotificationId()] = true
				byUser[n.GetUserId()]++
				if i > 0 && n.GetCreateTime().AsTime().After(got[i-1].GetCreateTime().AsTime()) {
					t.Errorf("%s: notification %d is newer than the one before", name, i)
				}
			}
			for u, want := range users {
				if byUser[u] != want {
					t.Errorf("%s: %d notifications of %s, want %d", name, byUser[u], u, want)
				}
			}
			if len(byUser) != len(users) {
				t.Errorf("%s: notifications of %v, want only %v", name, byUser, users)
			}
		}
		operator := servicetest.AsService(t.Context(), authz.Operator)
		check("alice in pages of 3", list(asUser(t.Context(), alice), &notifyv1.ListNotificationsRequest{PageSize: 3}), map[string]int{alice: 7})
		check("alice by id", list(asUser(t.Context(), alice), &notifyv1.ListNotificationsRequest{UserId: alice}), map[string]int{alice: 7})
		check("bob", list(asUser(t.Context(), bob), &notifyv1.ListNotificationsRequest{PageSize: 1}), map[string]int{bob: 2})
		check("operator for bob", list(operator, &notifyv1.ListNotificationsRequest{UserId: bob}), map[string]int{bob: 2})
		check("operator for all", list(operator, &notifyv1.ListNotificationsRequest{PageSize: 4}), map[string]int{alice: 7, bob: 2})

		errs := []struct {
			name   string
			ctx    context.Context
			req    *notifyv1.ListNotificationsRequest
			code   codes.Code
			reason string
		}{
			{"alice asks for bob's", asUser(t.Context(), alice), &notifyv1.ListNotificationsRequest{UserId: bob}, codes.PermissionDenied, notify.ReasonNotOwner},
			{"bad page token", asUser(t.Context(), alice), &notifyv1.ListNotificationsRequest{PageToken: "!!"}, codes.InvalidArgument, notify.ReasonInvalidPageToken},
			{"operator with a user", servicetest.As(t.Context(), authz.Operator, alice), &notifyv1.ListNotificationsRequest{UserId: bob}, codes.PermissionDenied, notify.ReasonNotOwner},
			{"service without a user", servicetest.AsService(t.Context(), "gateway"), &notifyv1.ListNotificationsRequest{}, codes.PermissionDenied, authz.ReasonUserRequired},
			{"no service", servicetest.As(t.Context(), "", alice), &notifyv1.ListNotificationsRequest{}, codes.PermissionDenied, authz.ReasonServiceRequired},
		}
		for _, tc := range errs {
			_, err := c.ListNotifications(tc.ctx, tc.req)
			if grpcstatus.Code(err) != tc.code || status.Reason(err) != tc.reason {
				t.Errorf("ListNotifications %s = %v (reason %q), want %v %s", tc.name, err, status.Reason(err), tc.code, tc.reason)
			}
		}
	})
}

func TestValidation(t *testing.T) {
	t.Parallel()
	c := serve(t, open(t, sqliteDB(t), notify.Config{MailDir: t.TempDir()}))
	_, err := c.ListNotifications(asUser(t.Context(), "u1"), &notifyv1.ListNotificationsRequest{
		UserId: strings.Repeat("u", notify.MaxIDLen+1), PageSize: notify.MaxPageSize + 1, PageToken: strings.Repeat("t", notify.MaxPageTokenLen+1),
	})
	if grpcstatus.Code(err) != codes.InvalidArgument {
		t.Fatalf("ListNotifications with bad fields = %v, want INVALID_ARGUMENT", err)
	}
	var got []string
	for _, v := range status.BadRequest(err).GetFieldViolations() {
		got = append(got, v.GetField())
	}
	if want := []string{"user_id", "page_size", "page_token"}; !slices.Equal(got, want) {
		t.Errorf("violations of %v, want %v", got, want)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	t.Parallel()
	db := sqltest.New(t, sqldb.SQLite, nil, "")
	dir := t.TempDir()
	for _, cfg := range []notify.Config{
		{},
		{MailDir: dir, PollInterval: -time.Second},
		{MailDir: dir, BatchSize: notify.MaxBatchSize + 1},
		{MailDir: dir, MaxAttempts: -1},
		{MailDir: dir, SendTimeout: -time.Second},
		{MailDir: dir, From: "not an address"},
		{MailDir: dir, From: "Shop <shop@>"},
	} {
		if svc, err := notify.Open(t.Context(), db, cfg, nil); err == nil {
			_ = svc.Close()
			t.Errorf("Open(%+v) succeeded, want an error", cfg)
		}
	}
}
