// Package notify is the notify service: it turns events into e-mails to
// the users they concern, sends them through a [Sender], keeps a record of
// every message, and serves switchboard.notify.v1.NotifyService to list
// them.
//
// # Events and messages
//
// The event consumer calls [Service.HandleEvent] inside its own database
// transaction, after recording the event id in its inbox in the same
// transaction, for the types [Service.EventTypes] lists:
//
//   - UserRegistered records the user's address and display name and
//     sends the welcome mail (template "welcome");
//   - OrderPlaced records who placed the order;
//   - OrderConfirmed and OrderCancelled record it too and send
//     "order_confirmed" or "order_cancelled";
//   - ShipmentStatusChanged to DELIVERED sends "shipment_delivered" to the
//     user who placed the order; other statuses are ignored.
//
// Messages are rendered from text/template files embedded in the package
// (templates/<name>.tmpl, each defining "subject" and "text") when the
// event is handled, and stored with the notification, so every attempt
// sends the same message whatever the templates become.
//
// # Unknown recipients
//
// Events about different subjects (a user, an order, a shipment) are not
// ordered with respect to each other, so an OrderConfirmed may arrive
// before the UserRegistered of its user, and a shipment event before any
// event of its order. HandleEvent then fails with an error matching
// ErrUnknownRecipient and records nothing. It is deliberately not
// permanent: the transport redelivers the event after its backoff, by
// which time the missing event has normally been handled, and the
// message goes out late rather than never. If the missing event never
// comes, the transport's MaxDeliver bounds the retries and the event ends
// in its dead-letter destination, where an operator sees it. Recording a
// failed notification instead would lose mails that a few seconds' wait
// delivers.
//
// # Sending after the commit
//
// HandleEvent only stores the notification, PENDING, in the consumer's
// transaction; it never talks to a mail server, so the database never
// waits on SMTP and a rolled-back transaction sends nothing. A sender
// loop, which Open starts and Close stops, picks due notifications
// (Config.BatchSize at a time, at most 16 batches per tick), and for each
// claims an attempt with one conditional UPDATE (counting it and leasing
// the row for Config.SendTimeout plus a margin, so that two instances
// never send one notification at once, and a dead instance's attempt is
// taken over when its lease ends), sends it, and marks it SENT, or
// PENDING again after a backoff (Config.RetryBackoff doubling up to
// Config.MaxRetryBackoff), or FAILED with the error once the server
// rejected it for good (ErrRejected) or Config.MaxAttempts attempts
// failed. The loop runs every Config.PollInterval, and at once after
// [Service.Wake], which the consumer calls when its transaction has
// committed. A crash never loses a mail: the row is committed before any
// attempt. Delivery is at least once: a crash between the server's
// acceptance and the SENT mark sends the message again, with the same
// Message-ID.
//
// # Senders
//
// [FileSender], the default, writes each message as an RFC 5322 file
// <notification id>.eml in Config.MailDir, atomically (temporary file,
// fsync, rename). [SMTPSender] sends over SMTP with net/smtp: STARTTLS
// when offered (or required, or implicit TLS), AUTH PLAIN when a username
// is set (never in the clear except to localhost), and a bound on
// connecting and on the whole conversation; its SMTPConfig never logs the
// password.
//
// # ListNotifications
//
// Lists finished notifications (SENT or FAILED; a PENDING one has no
// status in the API yet), newest first by the time they were sent or
// given up on, which is their create_time. A verified user sees only
// their own: user_id must be empty or their id (PERMISSION_DENIED
// otherwise). The operator certificate without a user may list anyone's,
// or everyone's with user_id empty. Pages hold 1 to 100 notifications
// (20 by default); the page token is the position of the last one.
package notify
