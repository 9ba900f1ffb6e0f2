package payment

import (
	"strings"

	paymentv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/payment/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Limits of the requests, enforced by the validation rules.
const (
	// MaxKeyLen is the longest idempotency key, in characters.
	MaxKeyLen = 128
	// MaxIDLen is the longest account, authorization, owner or order id.
	MaxIDLen = 128
	// MaxReasonLen is the longest reason of a Void or Refund.
	MaxReasonLen = 500
	// MaxAmount is the largest amount of one call, in minor units
	// (10,000,000,000.00 in a currency with cents). It keeps every sum of
	// amounts far from int64 overflow.
	MaxAmount = 1_000_000_000_000
	// DefaultPageSize is the page size of ListLedgerEntries when the
	// request gives none.
	DefaultPageSize = 100
	// MaxPageSize is the largest page size of ListLedgerEntries.
	MaxPageSize = 1000
	// maxPageTokenLen bounds a page token: a sequence and an account id,
	// base64-encoded.
	maxPageTokenLen = 256
)

// addRules adds the validation rules of every PaymentService request to set.
func addRules(set *validate.Set) {
	validate.Rule(set, func(m *paymentv1.OpenAccountRequest, v *validate.Violations) {
		checkOpenAccount(m, v)
	})
	validate.Rule(set, func(m *paymentv1.GetAccountRequest, v *validate.Violations) {
		if m.GetAccountId() != "" {
			v.Length("account_id", m.GetAccountId(), 1, MaxIDLen)
			if m.GetOwnerId() != "" {
				v.Add("owner_id", "must be empty when account_id is set")
			}
			if m.GetCurrencyCode() != "" {
				v.Add("currency_code", "must be empty when account_id is set")
			}
			return
		}
		if m.GetOwnerId() == "" && m.GetCurrencyCode() == "" {
			v.Add("account_id", "is required, or owner_id with currency_code")
			return
		}
		v.Length("owner_id", m.GetOwnerId(), 1, MaxIDLen)
		checkCurrency(v, "currency_code", m.GetCurrencyCode())
	})
	validate.Rule(set, func(m *paymentv1.AuthorizeRequest, v *validate.Violations) {
		v.Length("idempotency_key", m.GetIdempotencyKey(), 1, MaxKeyLen)
		v.Length("account_id", m.GetAccountId(), 1, MaxIDLen)
		checkMoney(v, "amount", m.GetAmount(), true)
		v.Length("order_id", m.GetOrderId(), 0, MaxIDLen)
	})
	validate.Rule(set, func(m *paymentv1.CaptureRequest, v *validate.Violations) {
		v.Length("idempotency_key", m.GetIdempotencyKey(), 1, MaxKeyLen)
		v.Length("authorization_id", m.GetAuthorizationId(), 1, MaxIDLen)
		checkMoney(v, "amount", m.GetAmount(), false)
	})
	validate.Rule(set, func(m *paymentv1.VoidRequest, v *validate.Violations) {
		v.Length("idempotency_key", m.GetIdempotencyKey(), 1, MaxKeyLen)
		v.Length("authorization_id", m.GetAuthorizationId(), 1, MaxIDLen)
		v.Length("reason", m.GetReason(), 0, MaxReasonLen)
	})
	validate.Rule(set, func(m *paymentv1.RefundRequest, v *validate.Violations) {
		v.Length("idempotency_key", m.GetIdempotencyKey(), 1, MaxKeyLen)
		v.Length("authorization_id", m.GetAuthorizationId(), 1, MaxIDLen)
		checkMoney(v, "amount", m.GetAmount(), false)
		v.Length("reason", m.GetReason(), 0, MaxReasonLen)
	})
	validate.Rule(set, func(m *paymentv1.ListLedgerEntriesRequest, v *validate.Violations) {
		v.Length("account_id", m.GetAccountId(), 1, MaxIDLen)
		v.Range("page_size", int64(m.GetPageSize()), 0, MaxPageSize)
		if tok := m.GetPageToken(); tok != "" {
			if len(tok) > maxPageTokenLen {
				v.Addf("page_token", "must be at most %d characters", maxPageTokenLen)
			} else if _, ok := parsePageToken(tok, m.GetAccountId()); !ok {
				v.Add("page_token", "is not a token of this account's listing")
			}
		}
	})
}

// checkOpenAccount holds the rules of OpenAccountRequest, which
// OpenForUser applies too.
func checkOpenAccount(m *paymentv1.OpenAccountRequest, v *validate.Violations) {
	v.Length("idempotency_key", m.GetIdempotencyKey(), 1, MaxKeyLen)
	v.Length("owner_id", m.GetOwnerId(), 1, MaxIDLen)
	if strings.HasPrefix(m.GetOwnerId(), SystemOwnerPrefix) {
		v.Addf("owner_id", "must not start with %q, which names system accounts", SystemOwnerPrefix)
	}
	checkCurrency(v, "currency_code", m.GetCurrencyCode())
	if c := m.GetOpeningCredit(); c != nil {
		checkMoney(v, "opening_credit", c, false)
		if c.GetCurrencyCode() != m.GetCurrencyCode() {
			v.Add("opening_credit.currency_code", "must equal currency_code")
		}
	}
}

// checkCurrency records a violation unless code is an ISO 4217 currency.
func checkCurrency(v *validate.Violations, field, code string) {
	switch {
	case code == "":
		v.Add(field, "is required")
	case !isCurrency(code):
		v.Add(field, "must be an ISO 4217 currency code in upper case, such as USD")
	}
}

// checkMoney records violations unless m is a positive amount of at most
// MaxAmount in an ISO 4217 currency. A nil m is a violation only when
// required.
func checkMoney(v *validate.Violations, field string, m *typev1.Money, required bool) {
	if m == nil {
		if required {
			v.Add(field, "is required")
		}
		return
	}
	v.Range(field+".amount_minor", m.GetAmountMinor(), 1, MaxAmount)
	checkCurrency(v, field+".currency_code", m.GetCurrencyCode())
}
