package payment

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// api implements paymentv1.PaymentServiceServer on a Service. Requests
// reach it validated and authorized by the kit's chain; it checks what the
// policy cannot (a user reads only their own accounts) and maps every
// domain error with the service's status table.
type api struct {
	paymentv1.UnimplementedPaymentServiceServer
	svc *Service
}

var _ paymentv1.PaymentServiceServer = (*api)(nil)

// requestHash returns the hex SHA-256 of the deterministic encoding of
// req, which identifies the request behind an idempotency key.
func requestHash(req proto.Message) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		// A validated request always marshals. Should one not, give it a
		// hash no other request has: a replay then fails as a reused key
		// instead of returning another request's response.
		return "unhashable-" + newID()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func idem(key string, req proto.Message) Idempotency {
	return Idempotency{Key: key, RequestHash: requestHash(req)}
}

// checkReader allows a call that carries no user (a service the policy
// admits, acting for itself) and a user who owns the account: a user sees
// only their own accounts.
func checkReader(ctx context.Context, ownerID string) error {
	u := identity.UserFrom(ctx)
	if u == nil || u.ID == ownerID {
		return nil
	}
	return status.PermissionDenied(Domain, ReasonNotAccountOwner, "the account belongs to another user")
}

// OpenAccount implements paymentv1.PaymentServiceServer.
func (a *api) OpenAccount(ctx context.Context, req *paymentv1.OpenAccountRequest) (*paymentv1.OpenAccountResponse, error) {
	acct, err := a.svc.store.OpenAccount(ctx, idem(req.GetIdempotencyKey(), req), OpenAccountParams{
		OwnerID:       req.GetOwnerId(),
		Currency:      req.GetCurrencyCode(),
		OpeningCredit: req.GetOpeningCredit().GetAmountMinor(),
	})
	if err != nil {
		return nil, a.svc.table.Map(ctx, err)
	}
	return &paymentv1.OpenAccountResponse{Account: accountProto(acct)}, nil
}

// GetAccount implements paymentv1.PaymentServiceServer.
func (a *api) GetAccount(ctx context.Context, req *paymentv1.GetAccountRequest) (*paymentv1.GetAccountResponse, error) {
	var acct Account
	var err error
	if req.GetAccountId() != "" {
		acct, err = a.svc.store.Account(ctx, req.GetAccountId())
	} else {
		// Refuse before looking, so that a user learns nothing about
		// whether someone else has an account.
		if err := checkReader(ctx, req.GetOwnerId()); err != nil {
			return nil, err
		}
		acct, err = a.svc.store.AccountByOwner(ctx, req.GetOwnerId(), req.GetCurrencyCode())
	}
	if err != nil {
		return nil, a.svc.table.Map(ctx, err)
	}
	if err := checkReader(ctx, acct.OwnerID); err != nil {
		return nil, err
	}
	return &paymentv1.GetAccountResponse{Account: accountProto(acct)}, nil
}

// Authorize implements paymentv1.PaymentServiceServer.
func (a *api) Authorize(ctx context.Context, req *paymentv1.AuthorizeRequest) (*paymentv1.AuthorizeResponse, error) {
	auth, err := a.svc.store.Authorize(ctx, idem(req.GetIdempotencyKey(), req), AuthorizeParams{
		AccountID: req.GetAccountId(),
		OrderID:   req.GetOrderId(),
		Amount:    req.GetAmount().GetAmountMinor(),
		Currency:  req.GetAmount().GetCurrencyCode(),
	})
	if err != nil {
		return nil, a.svc.table.Map(ctx, err)
	}
	return &paymentv1.AuthorizeResponse{Authorization: authorizationProto(auth)}, nil
}

// Capture implements paymentv1.PaymentServiceServer.
func (a *api) Capture(ctx context.Context, req *paymentv1.CaptureRequest) (*paymentv1.CaptureResponse, error) {
	auth, err := a.svc.store.Capture(ctx, idem(req.GetIdempotencyKey(), req), CaptureParams{
		AuthorizationID: req.GetAuthorizationId(),
		Amount:          req.GetAmount().GetAmountMinor(),
		Currency:        req.GetAmount().GetCurrencyCode(),
	})
	if err != nil {
		return nil, a.svc.table.Map(ctx, err)
	}
	return &paymentv1.CaptureResponse{Authorization: authorizationProto(auth)}, nil
}

// Void implements paymentv1.PaymentServiceServer.
func (a *api) Void(ctx context.Context, req *paymentv1.VoidRequest) (*paymentv1.VoidResponse, error) {
	auth, err := a.svc.store.Void(ctx, idem(req.GetIdempotencyKey(), req), VoidParams{
		AuthorizationID: req.GetAuthorizationId(),
		Reason:          req.GetReason(),
	})
	if err != nil {
		return nil, a.svc.table.Map(ctx, err)
	}
	return &paymentv1.VoidResponse{Authorization: authorizationProto(auth)}, nil
}

// Refund implements paymentv1.PaymentServiceServer.
func (a *api) Refund(ctx context.Context, req *paymentv1.RefundRequest) (*paymentv1.RefundResponse, error) {
	r, err := a.svc.store.Refund(ctx, idem(req.GetIdempotencyKey(), req), RefundParams{
		AuthorizationID: req.GetAuthorizationId(),
		Amount:          req.GetAmount().GetAmountMinor(),
		Currency:        req.GetAmount().GetCurrencyCode(),
		Reason:          req.GetReason(),
	})
	if err != nil {
		return nil, a.svc.table.Map(ctx, err)
	}
	return &paymentv1.RefundResponse{Authorization: authorizationProto(r.Authorization), RefundId: r.RefundID}, nil
}

// ListLedgerEntries implements paymentv1.PaymentServiceServer. Each page
// is its own query by the (account, sequence) key, so no transaction or
// cursor stays open while the client reads; a page is sent before the
// next is read, so a slow client slows the loop instead of filling
// memory. The stream always sends at least one message, and at most
// Config.MaxPagesPerStream; the last message sent has an empty
// next_page_token when the ledger was read to its end.
func (a *api) ListLedgerEntries(req *paymentv1.ListLedgerEntriesRequest, stream paymentv1.PaymentService_ListLedgerEntriesServer) error {
	ctx := stream.Context()
	acct, err := a.svc.store.Account(ctx, req.GetAccountId())
	if err != nil {
		return a.svc.table.Map(ctx, err)
	}
	if err := checkReader(ctx, acct.OwnerID); err != nil {
		return err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = DefaultPageSize
	}
	var after int64
	if tok := req.GetPageToken(); tok != "" {
		after, _ = parsePageToken(tok, acct.ID) // validated by the rules
	}
	for range a.svc.cfg.MaxPagesPerStream {
		entries, err := a.svc.store.LedgerEntries(ctx, acct.ID, after, size+1)
		if err != nil {
			return a.svc.table.Map(ctx, err)
		}
		more := len(entries) > size
		if more {
			entries = entries[:size]
		}
		resp := &paymentv1.ListLedgerEntriesResponse{Entries: make([]*paymentv1.LedgerEntry, len(entries))}
		for i, e := range entries {
			resp.Entries[i] = entryProto(e)
		}
		if more {
			after = entries[len(entries)-1].Sequence
			resp.NextPageToken = pageToken(acct.ID, after)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
	return nil
}

// pageToken returns the opaque token that resumes accountID's listing
// after the entry with sequence seq.
func pageToken(accountID string, seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(seq, 10) + ":" + accountID))
}

// parsePageToken returns the sequence a token of accountID's listing
// resumes after; ok is false for anything else.
func parsePageToken(tok, accountID string) (seq int64, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, false
	}
	n, id, found := strings.Cut(string(b), ":")
	if !found || id != accountID {
		return 0, false
	}
	seq, err = strconv.ParseInt(n, 10, 64)
	if err != nil || seq < 1 {
		return 0, false
	}
	return seq, true
}

func money(amount int64, currency string) *typev1.Money {
	return &typev1.Money{AmountMinor: amount, CurrencyCode: currency}
}

func accountProto(a Account) *paymentv1.Account {
	return &paymentv1.Account{
		AccountId:  a.ID,
		OwnerId:    a.OwnerID,
		Balance:    money(a.Balance(), a.Currency),
		Held:       money(a.Held, a.Currency),
		Available:  money(a.Available, a.Currency),
		CreateTime: timestamppb.New(a.CreateTime),
	}
}

var statusProto = map[AuthorizationStatus]paymentv1.AuthorizationStatus{
	StatusAuthorized:        paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_AUTHORIZED,
	StatusCaptured:          paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_CAPTURED,
	StatusVoided:            paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_VOIDED,
	StatusPartiallyRefunded: paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_PARTIALLY_REFUNDED,
	StatusRefunded:          paymentv1.AuthorizationStatus_AUTHORIZATION_STATUS_REFUNDED,
}

func authorizationProto(a Authorization) *paymentv1.Authorization {
	return &paymentv1.Authorization{
		AuthorizationId: a.ID,
		AccountId:       a.AccountID,
		OrderId:         a.OrderID,
		Amount:          money(a.Amount, a.Currency),
		Captured:        money(a.Captured, a.Currency),
		Refunded:        money(a.Refunded, a.Currency),
		Status:          statusProto[a.Status],
		CreateTime:      timestamppb.New(a.CreateTime),
		UpdateTime:      timestamppb.New(a.UpdateTime),
	}
}

var entryKindProto = map[EntryKind]paymentv1.EntryKind{
	EntryOpeningCredit: paymentv1.EntryKind_ENTRY_KIND_OPENING_CREDIT,
	EntryHold:          paymentv1.EntryKind_ENTRY_KIND_HOLD,
	EntryRelease:       paymentv1.EntryKind_ENTRY_KIND_RELEASE,
	EntryCapture:       paymentv1.EntryKind_ENTRY_KIND_CAPTURE,
	EntryRefund:        paymentv1.EntryKind_ENTRY_KIND_REFUND,
}

func entryProto(e Entry) *paymentv1.LedgerEntry {
	return &paymentv1.LedgerEntry{
		EntryId:         e.ID,
		TransactionId:   e.TransactionID,
		AccountId:       e.AccountID,
		Amount:          money(e.Amount, e.Currency),
		Kind:            entryKindProto[e.Kind],
		AuthorizationId: e.AuthorizationID,
		Sequence:        e.Sequence,
		CreateTime:      timestamppb.New(e.CreateTime),
	}
}
