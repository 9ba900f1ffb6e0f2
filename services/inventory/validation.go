package inventory

import (
	"encoding/base64"
	"fmt"
	"unicode"
	"unicode/utf8"

	inventoryv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/inventory/v1"
	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Limits of the requests, enforced by Rules and the handlers.
const (
	// MaxIDLen bounds item ids and order ids.
	MaxIDLen = 64
	// MaxNameLen and MaxDescriptionLen bound an item's texts, in
	// characters.
	MaxNameLen        = 200
	MaxDescriptionLen = 2000
	// MaxQuantity bounds the units on hand an import may record.
	MaxQuantity = 1_000_000_000
	// MaxLines bounds the lines of a reservation; MaxLineQuantity the
	// units of one line.
	MaxLines        = 100
	MaxLineQuantity = 1000
	// MaxTTLSeconds bounds how long a reservation may be held.
	MaxTTLSeconds = 86_400
	// MaxReasonLen bounds the reason of a Release.
	MaxReasonLen = 500
	// DefaultPageSize and MaxPageSize bound a ListItems page.
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// MaxRecordMessages bounds the messages of one RecordItems stream; the
	// next one ends the call with INVALID_ARGUMENT (TOO_MANY_ITEMS), after
	// the items before it have been imported.
	MaxRecordMessages = 100_000
	// MaxRecordErrors bounds the errors listed in a RecordItemsResponse.
	MaxRecordErrors = 1000
	// MaxSubscriptions bounds the item ids one Subscribe stream follows at
	// once, and the ids of one SubscribeRequest list.
	MaxSubscriptions = 1000
)

// validItemID reports whether id is 1 to MaxIDLen characters of
// [A-Za-z0-9._-].
func validItemID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

const itemIDRule = "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"

func checkItemID(v *validate.Violations, field, id string) {
	if !validItemID(id) {
		v.Add(field, itemIDRule)
	}
}

// checkOrderID accepts 1 to MaxIDLen characters of valid UTF-8 without
// spaces or control characters: order ids are made by the order service.
func checkOrderID(v *validate.Violations, field, id string) {
	v.Length(field, id, 1, MaxIDLen)
	if !utf8.ValidString(id) {
		return // Length said so
	}
	for _, r := range id {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			v.Add(field, "must not contain spaces or control characters")
			return
		}
	}
}

func checkMoney(v *validate.Violations, field string, m *typev1.Money) {
	c := m.GetCurrencyCode()
	if len(c) != 3 || !isUpper(c[0]) || !isUpper(c[1]) || !isUpper(c[2]) {
		v.Add(field+".currency_code", "must be an ISO 4217 code of 3 upper-case letters")
	}
	if m.GetAmountMinor() < 0 {
		v.Add(field+".amount_minor", "must not be negative")
	}
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }

// checkRecordItem checks one imported item's fields. Whether name and
// price are required depends on whether the item exists, which only the
// store knows.
func checkRecordItem(m *inventoryv1.RecordItemsRequest, v *validate.Violations) {
	checkItemID(v, "item_id", m.GetItemId())
	v.Length("name", m.GetName(), 0, MaxNameLen)
	v.Length("description", m.GetDescription(), 0, MaxDescriptionLen)
	if m.GetPrice() != nil {
		checkMoney(v, "price", m.GetPrice())
	}
	v.Range("quantity", m.GetQuantity(), 0, MaxQuantity)
}

// recordItemError returns why m is invalid, or nil.
func recordItemError(index int, m *inventoryv1.RecordItemsRequest) *inventoryv1.RecordItemError {
	var v validate.Violations
	checkRecordItem(m, &v)
	if v.Len() == 0 {
		return nil
	}
	first := status.BadRequest(v.Err()).GetFieldViolations()[0]
	desc := first.GetDescription()
	if n := v.Len(); n > 1 {
		desc += fmt.Sprintf(" (and %d more)", n-1)
	}
	return &inventoryv1.RecordItemError{
		Index:       int32(index), //nolint:gosec // bounded by MaxRecordMessages
		ItemId:      m.GetItemId(),
		Field:       first.GetField(),
		Reason:      validate.Reason,
		Description: desc,
	}
}

// pageTokenPrefix versions the page token, which is otherwise the base64 of
// the last item id listed.
const pageTokenPrefix = "v1:"

func encodePageToken(lastID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenPrefix + lastID))
}

// decodePageToken returns the item id a page token resumes after; "" for
// the empty token.
func decodePageToken(tok string) (string, bool) {
	if tok == "" {
		return "", true
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) <= len(pageTokenPrefix) || string(b[:len(pageTokenPrefix)]) != pageTokenPrefix {
		return "", false
	}
	id := string(b[len(pageTokenPrefix):])
	return id, validItemID(id)
}

// Rules adds the validation rules of every InventoryService request to s.
//
// RecordItemsRequest has a rule that accepts every message: the handler
// checks each item itself and rejects bad ones one by one in the reply,
// since one bad item must not end the import.
func Rules(s *validate.Set) {
	validate.Rule(s, func(m *inventoryv1.GetItemRequest, v *validate.Violations) {
		checkItemID(v, "item_id", m.GetItemId())
	})
	validate.Rule(s, func(m *inventoryv1.ListItemsRequest, v *validate.Violations) {
		v.Range("page_size", int64(m.GetPageSize()), 0, MaxPageSize)
		if _, ok := decodePageToken(m.GetPageToken()); !ok {
			v.Add("page_token", "is not a token from an earlier ListItems")
		}
	})
	validate.Rule(s, func(*inventoryv1.RecordItemsRequest, *validate.Violations) {})
	validate.Rule(s, func(m *inventoryv1.SubscribeRequest, v *validate.Violations) {
		v.MaxItems("subscribe_item_ids", len(m.GetSubscribeItemIds()), MaxSubscriptions)
		v.MaxItems("unsubscribe_item_ids", len(m.GetUnsubscribeItemIds()), MaxSubscriptions)
		if v.Len() > 0 {
			return
		}
		for i, id := range m.GetSubscribeItemIds() {
			checkItemID(v, fmt.Sprintf("subscribe_item_ids[%d]", i), id)
		}
		for i, id := range m.GetUnsubscribeItemIds() {
			checkItemID(v, fmt.Sprintf("unsubscribe_item_ids[%d]", i), id)
		}
	})
	validate.Rule(s, func(m *inventoryv1.ReserveRequest, v *validate.Violations) {
		checkOrderID(v, "order_id", m.GetOrderId())
		v.Range("ttl_seconds", int64(m.GetTtlSeconds()), 0, MaxTTLSeconds)
		lines := m.GetLines()
		switch {
		case len(lines) == 0:
			v.Add("lines", "is required")
		case len(lines) > MaxLines:
			v.MaxItems("lines", len(lines), MaxLines)
			return
		}
		seen := make(map[string]int, len(lines))
		for i, l := range lines {
			field := fmt.Sprintf("lines[%d]", i)
			checkItemID(v, field+".item_id", l.GetItemId())
			v.Range(field+".quantity", l.GetQuantity(), 1, MaxLineQuantity)
			if j, dup := seen[l.GetItemId()]; dup {
				v.Addf(field+".item_id", "repeats lines[%d]: list each item once", j)
			} else {
				seen[l.GetItemId()] = i
			}
		}
	})
	validate.Rule(s, func(m *inventoryv1.ReleaseRequest, v *validate.Violations) {
		checkOrderID(v, "order_id", m.GetOrderId())
		v.Length("reason", m.GetReason(), 0, MaxReasonLen)
	})
	validate.Rule(s, func(m *inventoryv1.CommitReservationRequest, v *validate.Violations) {
		checkOrderID(v, "order_id", m.GetOrderId())
	})
}
