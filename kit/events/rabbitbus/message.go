package rabbitbus

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-rpc/switchboard/kit/events"
)

// HeaderKey is the AMQP header that carries Message.Key.
const HeaderKey = "Switchboard-Key"

// Broker headers read from a delivery.
const (
	headerDeliveryCount = "x-delivery-count"
	headerDeathReason   = "x-first-death-reason"
	brokerHeaderPrefix  = "x-"
)

// maxErrorHeader bounds the handler error recorded on a dead letter.
const maxErrorHeader = 1024

// ErrInvalid is wrapped by the errors Publish, Setup and Subscribe return
// for a message or subscription the transport cannot carry.
var ErrInvalid = errors.New("rabbitbus: invalid")

// checkName reports whether s can be an AMQP short string name: 1 to 255
// bytes of valid UTF-8 without spaces or control characters.
func checkName(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > maxName:
		return fmt.Errorf("%d bytes, want at most %d", len(s), maxName)
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("%q has a space or control character", s)
	}
	return nil
}

// checkType reports whether typ can be a routing key and a binding that
// matches only itself: a name without the topic wildcards '*' and '#'.
func checkType(typ string) error {
	if err := checkName(typ); err != nil {
		return fmt.Errorf("%w type: %w", ErrInvalid, err)
	}
	if strings.ContainsAny(typ, "*#") {
		return fmt.Errorf("%w type %q: '*' and '#' are topic wildcards", ErrInvalid, typ)
	}
	return nil
}

// checkMessage validates what Publish sends.
func checkMessage(msg events.Message) error {
	if err := checkType(msg.Type); err != nil {
		return err
	}
	if len(msg.ID) > maxName {
		return fmt.Errorf("%w id: %d bytes, want at most %d", ErrInvalid, len(msg.ID), maxName)
	}
	size := len(HeaderKey) + len(msg.Key)
	for k, v := range msg.Header {
		if k == "" || strings.HasPrefix(strings.ToLower(k), brokerHeaderPrefix) {
			return fmt.Errorf("%w header %q: empty, or x- (reserved for the broker)", ErrInvalid, k)
		}
		size += len(k) + len(v)
	}
	if size > MaxHeaderBytes {
		return fmt.Errorf("%w: headers take %d bytes, want at most %d", ErrInvalid, size, MaxHeaderBytes)
	}
	return nil
}

// publishing turns msg into a persistent AMQP message.
func publishing(msg events.Message) amqp.Publishing {
	h := make(amqp.Table, len(msg.Header)+1)
	for k, v := range msg.Header {
		h[k] = v
	}
	h[HeaderKey] = msg.Key
	return amqp.Publishing{
		Headers:      h,
		ContentType:  "application/octet-stream",
		DeliveryMode: amqp.Persistent,
		MessageId:    msg.ID,
		Type:         msg.Type,
		Timestamp:    time.Now(),
		Body:         msg.Data,
	}
}

// deadLetter is the publishing that records msg's failure for group.
func deadLetter(msg events.Message, group string, attempts int, cause error) amqp.Publishing {
	p := publishing(msg)
	p.Headers[events.HeaderError] = truncate(cause.Error(), maxErrorHeader)
	p.Headers[events.HeaderAttempts] = strconv.Itoa(attempts)
	p.Headers[events.HeaderGroup] = group
	return p
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// message reads a delivery back into the Message that was published. The
// broker's own x- headers are left out; a dead letter the broker made
// itself (its delivery limit ran out) gets HeaderError from the broker's
// reason and HeaderGroup from the transport.
func message(d *amqp.Delivery, group string) events.Message {
	m := events.Message{ID: d.MessageId, Type: d.Type, Data: d.Body}
	if m.Type == "" {
		m.Type = d.RoutingKey
	}
	for k, v := range d.Headers {
		if strings.HasPrefix(k, brokerHeaderPrefix) {
			continue
		}
		s, ok := headerString(v)
		if !ok {
			continue
		}
		if k == HeaderKey {
			m.Key = s
			continue
		}
		if m.Header == nil {
			m.Header = make(map[string]string, len(d.Headers))
		}
		m.Header[k] = s
	}
	if reason, ok := headerString(d.Headers[headerDeathReason]); ok && m.Header[events.HeaderError] == "" {
		if m.Header == nil {
			m.Header = make(map[string]string, 2)
		}
		m.Header[events.HeaderError] = "rabbitmq dead-lettered the message: " + reason
		m.Header[events.HeaderGroup] = group
	}
	return m
}

func headerString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

// deliveryCount is how many times the broker delivered d before: its
// quorum queue's x-delivery-count, absent on a first delivery.
func deliveryCount(d *amqp.Delivery) int {
	var n int64
	switch v := d.Headers[headerDeliveryCount].(type) {
	case int64:
		n = v
	case int32:
		n = int64(v)
	case int16:
		n = int64(v)
	case int8:
		n = int64(v)
	case int:
		n = int64(v)
	case uint8:
		n = int64(v)
	case uint16:
		n = int64(v)
	case uint32:
		n = int64(v)
	}
	const bound = 1 << 30
	return int(max(0, min(n, bound)))
}
