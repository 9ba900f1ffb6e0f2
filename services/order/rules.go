package order

import (
	"strconv"

	orderv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/order/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Limits of the requests, enforced by Rules. Address bounds match the
// shipping service's.
const (
	MaxIdempotencyKeyLen = 128
	MaxLines             = 100
	MaxQuantity          = 1000
	MaxItemIDLen         = 64
	MaxOrderIDLen        = 64
	MaxCancelReasonLen   = 500
	DefaultPageSize      = 20
	MaxPageSize          = 100
	MaxPageTokenLen      = 200
	MaxRecipientLen      = 100
	MaxAddressLineLen    = 200
	MaxCityLen           = 100
	MaxPostalCodeLen     = 20
)

// Rules adds the validation rules of the OrderService's requests to s.
func Rules(s *validate.Set) {
	validate.Rule(s, func(m *orderv1.PlaceOrderRequest, v *validate.Violations) {
		v.Length("idempotency_key", m.GetIdempotencyKey(), 1, MaxIdempotencyKeyLen)
		lines := m.GetLines()
		switch {
		case len(lines) == 0:
			v.Add("lines", "is required")
		case len(lines) > MaxLines:
			v.MaxItems("lines", len(lines), MaxLines)
		default:
			seen := make(map[string]int, len(lines))
			for i, l := range lines {
				field := "lines[" + strconv.Itoa(i) + "]"
				itemID(v, field+".item_id", l.GetItemId())
				v.Range(field+".quantity", l.GetQuantity(), 1, MaxQuantity)
				if j, dup := seen[l.GetItemId()]; dup && l.GetItemId() != "" {
					v.Addf(field+".item_id", "duplicates lines[%d]: each item at most once", j)
				} else {
					seen[l.GetItemId()] = i
				}
			}
		}
		address(v, "shipping_address", m.GetShippingAddress())
	})
	validate.Rule(s, func(m *orderv1.GetOrderRequest, v *validate.Violations) {
		v.Length("order_id", m.GetOrderId(), 1, MaxOrderIDLen)
	})
	validate.Rule(s, func(m *orderv1.ListOrdersRequest, v *validate.Violations) {
		v.Range("page_size", int64(m.GetPageSize()), 0, MaxPageSize)
		v.Length("page_token", m.GetPageToken(), 0, MaxPageTokenLen)
	})
	validate.Rule(s, func(m *orderv1.CancelOrderRequest, v *validate.Violations) {
		v.Length("order_id", m.GetOrderId(), 1, MaxOrderIDLen)
		v.Length("reason", m.GetReason(), 0, MaxCancelReasonLen)
	})
	validate.Rule(s, func(m *orderv1.WatchOrderRequest, v *validate.Violations) {
		v.Length("order_id", m.GetOrderId(), 1, MaxOrderIDLen)
	})
}

// itemID checks an item id: 1 to 64 characters of [A-Za-z0-9._-], as the
// inventory defines them.
func itemID(v *validate.Violations, field, id string) {
	if id == "" || len(id) > MaxItemIDLen {
		v.Length(field, id, 1, MaxItemIDLen)
		return
	}
	for _, r := range id {
		if !itemIDChar(r) {
			v.Add(field, "must be characters of [A-Za-z0-9._-]")
			return
		}
	}
}

func itemIDChar(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return r == '.' || r == '_' || r == '-'
}

// address checks a shipping address.
func address(v *validate.Violations, field string, a *typev1.PostalAddress) {
	if a == nil {
		v.Add(field, "is required")
		return
	}
	v.Length(field+".recipient", a.GetRecipient(), 1, MaxRecipientLen)
	v.Length(field+".line1", a.GetLine1(), 1, MaxAddressLineLen)
	v.Length(field+".line2", a.GetLine2(), 0, MaxAddressLineLen)
	v.Length(field+".city", a.GetCity(), 1, MaxCityLen)
	v.Length(field+".postal_code", a.GetPostalCode(), 1, MaxPostalCodeLen)
	if c := a.GetCountryCode(); len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
		v.Add(field+".country_code", "must be an ISO 3166-1 alpha-2 code in upper case")
	}
}
