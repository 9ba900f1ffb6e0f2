package shipping

import (
	"fmt"

	"github.com/google/uuid"

	shippingv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/shipping/v1"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Limits of the requests, enforced by Rules. MaxItems bounds the items of
// a shipment.
const (
	MaxOrderIDLen    = 64
	MaxItemIDLen     = 64
	MaxQuantity      = 1000
	MaxRecipientLen  = 100
	MaxLine1Len      = 200
	MaxLine2Len      = 200
	MaxCityLen       = 100
	MaxPostalCodeLen = 20
	MaxReasonLen     = 500
)

// Rules adds the validation rules of every ShippingService request to s.
func Rules(s *validate.Set) {
	validate.Rule(s, func(m *shippingv1.CreateShipmentRequest, v *validate.Violations) {
		v.Length("order_id", m.GetOrderId(), 1, MaxOrderIDLen)
		if a := m.GetAddress(); a == nil {
			v.Add("address", "is required")
		} else {
			v.Length("address.recipient", a.GetRecipient(), 1, MaxRecipientLen)
			v.Length("address.line1", a.GetLine1(), 1, MaxLine1Len)
			v.Length("address.line2", a.GetLine2(), 0, MaxLine2Len)
			v.Length("address.city", a.GetCity(), 1, MaxCityLen)
			v.Length("address.postal_code", a.GetPostalCode(), 1, MaxPostalCodeLen)
			if !isCountryCode(a.GetCountryCode()) {
				v.Add("address.country_code", "must be two upper-case letters (ISO 3166-1 alpha-2)")
			}
		}
		items := m.GetItems()
		switch {
		case len(items) == 0:
			v.Add("items", "must have at least 1 element")
			return
		case len(items) > MaxItems:
			v.MaxItems("items", len(items), MaxItems)
			return
		}
		seen := make(map[string]int, len(items))
		for i, it := range items {
			field := fmt.Sprintf("items[%d]", i)
			id := it.GetItemId()
			if !isItemID(id) {
				v.Addf(field+".item_id", "must be 1 to %d characters of [A-Za-z0-9._-]", MaxItemIDLen)
			} else if j, dup := seen[id]; dup {
				v.Addf(field+".item_id", "duplicates items[%d].item_id", j)
			} else {
				seen[id] = i
			}
			v.Range(field+".quantity", it.GetQuantity(), 1, MaxQuantity)
		}
	})
	validate.Rule(s, func(m *shippingv1.CancelShipmentRequest, v *validate.Violations) {
		shipmentID(v, m.GetShipmentId())
		v.Length("reason", m.GetReason(), 0, MaxReasonLen)
	})
	validate.Rule(s, func(m *shippingv1.GetShipmentRequest, v *validate.Violations) {
		shipmentID(v, m.GetShipmentId())
	})
	validate.Rule(s, func(m *shippingv1.TrackRequest, v *validate.Violations) {
		shipmentID(v, m.GetShipmentId())
	})
}

// shipmentID checks a shipment id: a UUID in canonical lower-case form,
// as the service assigns them.
func shipmentID(v *validate.Violations, id string) {
	if id == "" {
		v.Add("shipment_id", "is required")
		return
	}
	if len(id) != 36 {
		v.Add("shipment_id", "must be a UUID")
		return
	}
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		v.Add("shipment_id", "must be a UUID")
	}
}

func isCountryCode(s string) bool {
	return len(s) == 2 && 'A' <= s[0] && s[0] <= 'Z' && 'A' <= s[1] && s[1] <= 'Z'
}

func isItemID(s string) bool {
	if len(s) == 0 || len(s) > MaxItemIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isItemIDByte(s[i]) {
			return false
		}
	}
	return true
}

func isItemIDByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c == '.' || c == '_' || c == '-'
}
