package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
)

// Mail is one message ready to send: the envelope and the RFC 5322
// message.
type Mail struct {
	// ID is the notification id; file senders name the file after it.
	ID string
	// From and To are the envelope addresses (bare, no display name).
	From string
	To   string
	// Data is the whole message, headers and body, with CRLF line ends.
	Data []byte
}

// Sender delivers mail. Implementations are safe for concurrent use.
type Sender interface {
	// Send delivers m, or fails. An error wrapping ErrRejected means
	// the message will never be accepted and must not be retried; any
	// other error is transient. Send must return when ctx ends.
	Send(ctx context.Context, m *Mail) error
}

// compose builds the message of notification n from from, a parsed
// address: plain text in UTF-8, quoted-printable, with a Date of the
// notification's creation and a Message-ID from its id, so that every
// attempt sends the same message.
func compose(n *Notification, from *mail.Address) (*Mail, error) {
	to, err := mail.ParseAddress(n.Recipient)
	if err != nil {
		return nil, fmt.Errorf("%w: recipient %q: %w", ErrRejected, n.Recipient, err)
	}
	to.Name = n.RecipientName
	domain := from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	var b bytes.Buffer
	header := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	header("From", from.String())
	header("To", to.String())
	header("Subject", mime.QEncoding.Encode("utf-8", n.Subject))
	header("Date", n.Created.Format(time.RFC1123Z))
	header("Message-ID", "<"+n.ID+"@"+domain+">")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	header("Auto-Submitted", "auto-generated")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write([]byte(strings.ReplaceAll(n.Body, "\n", "\r\n"))); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	return &Mail{ID: n.ID, From: from.Address, To: to.Address, Data: b.Bytes()}, nil
}

// parseFrom parses Config.From: an address, with or without a display
// name, whose domain is not empty.
func parseFrom(s string) (*mail.Address, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("notify: Config.From %q: %w", s, err)
	}
	if i := strings.LastIndexByte(a.Address, '@'); i < 0 || i == len(a.Address)-1 {
		return nil, errors.New("notify: Config.From has no domain")
	}
	return a, nil
}
