package payment

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/internal/outboxtest"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/internal/sqldb/sqltest"
	"github.com/switchboard-rpc/switchboard/kit/events"
)

func TestStoreEmitsEventsInItsTransactions(t *testing.T) {
	sqltest.Each(t, Migrations, MigrationsDir, func(t *testing.T, db *sqldb.DB) {
		ctx := t.Context()
		if err := events.Migrate(ctx, db.DB, events.Dialect(db.Dialect)); err != nil {
			t.Fatal(err)
		}
		s := newSQLStore(db, events.NewOutbox("payment", events.Dialect(db.Dialect)))
		keys := &storeKeys{}
		var acct Account
		var auth Authorization
		steps := []struct {
			name string
			do   func() error
			want []string
		}{
			{"open", func() error {
				acct = mustOpen(t, s, keys, "u1", 1000)
				return nil
			}, []string{"AccountOpened u1"}},
			{"authorize", func() error {
				var err error
				auth, err = s.Authorize(ctx, Idempotency{Key: "auth", RequestHash: "h"}, AuthorizeParams{AccountID: acct.ID, OrderID: "o1", Amount: 300, Currency: "USD"})
				return err
			}, []string{"PaymentAuthorized o1"}},
			{"replayed authorize emits nothing", func() error {
				_, err := s.Authorize(ctx, Idempotency{Key: "auth", RequestHash: "h"}, AuthorizeParams{AccountID: acct.ID, OrderID: "o1", Amount: 300, Currency: "USD"})
				return err
			}, nil},
			{"refused authorize emits nothing", func() error {
				if _, err := s.Authorize(ctx, keys.next(), AuthorizeParams{AccountID: acct.ID, OrderID: "o2", Amount: 5000, Currency: "USD"}); err == nil {
					t.Error("Authorize above the balance succeeded")
				}
				return nil
			}, nil},
			{"capture", func() error {
				_, err := s.Capture(ctx, keys.next(), CaptureParams{AuthorizationID: auth.ID})
				return err
			}, []string{"PaymentCaptured o1"}},
			{"refund", func() error {
				_, err := s.Refund(ctx, keys.next(), RefundParams{AuthorizationID: auth.ID, Amount: 100, Currency: "USD"})
				return err
			}, []string{"PaymentRefunded o1"}},
			{"void of an authorization without order", func() error {
				a := mustAuthorize(t, s, keys, acct.ID, 10)
				_, err := s.Void(ctx, keys.next(), VoidParams{AuthorizationID: a.ID})
				return err
			}, []string{"PaymentAuthorized *", "PaymentVoided *"}},
		}
		var seq int64
		for _, step := range steps {
			if err := step.do(); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			var got []string
			got, seq = outboxtest.Rows(t, db, seq)
			for i, g := range got {
				if len(step.want) > i && step.want[i][len(step.want[i])-1] == '*' {
					got[i] = g[:len(step.want[i])-1] + "*"
				}
			}
			if diff := cmp.Diff(step.want, got); diff != "" {
				t.Errorf("%s: outbox rows (-want +got):\n%s", step.name, diff)
			}
		}
	})
}

func TestHandleUserRegisteredOpensTheAccountOnce(t *testing.T) {
	sqltest.Each(t, Migrations, MigrationsDir, func(t *testing.T, db *sqldb.DB) {
		ctx := t.Context()
		if err := events.Migrate(ctx, db.DB, events.Dialect(db.Dialect)); err != nil {
			t.Fatal(err)
		}
		svc, err := Open(ctx, db, Config{SignupCredit: 2500, Outbox: events.NewOutbox("payment", events.Dialect(db.Dialect))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svc.Close() })
		payload, err := anypb.New(&eventsv1.UserRegistered{UserId: "u-new", Email: "new@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		env := &eventsv1.Envelope{Id: "e1", Type: "switchboard.events.v1.UserRegistered", Subject: "u-new", Payload: payload}
		handle := func() error {
			return db.Tx(ctx, func(tx *sql.Tx) error { return svc.HandleEvent(ctx, tx, env) })
		}
		// Twice: a redelivery that got past the inbox changes nothing.
		for range 2 {
			if err := handle(); err != nil {
				t.Fatalf("HandleEvent = %v", err)
			}
		}
		a, err := svc.store.AccountByOwner(ctx, "u-new", DefaultSignupCurrency)
		if err != nil {
			t.Fatal(err)
		}
		if a.Available != 2500 {
			t.Errorf("signup account has %d available, want 2500", a.Available)
		}
		if got, _ := outboxtest.Rows(t, db, 0); !cmp.Equal(got, []string{"AccountOpened u-new"}) {
			t.Errorf("outbox = %v, want one AccountOpened", got)
		}
		bad := &eventsv1.Envelope{Id: "e2", Type: "switchboard.events.v1.UserRegistered", Payload: &anypb.Any{TypeUrl: "type.googleapis.com/switchboard.events.v1.UserRegistered", Value: []byte{0xff}}}
		err = db.Tx(context.WithoutCancel(ctx), func(tx *sql.Tx) error { return svc.HandleEvent(ctx, tx, bad) })
		if !errors.Is(err, events.ErrPermanent) {
			t.Errorf("HandleEvent(undecodable) = %v, want events.ErrPermanent", err)
		}
	})
}
