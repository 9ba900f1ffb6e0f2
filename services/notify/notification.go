package notify

import (
	"time"

	notifyv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/notify/v1"
)

// Status is where a notification is: waiting for the sender loop, or
// finished one way or the other.
type Status int

// The statuses of a notification.
const (
	// StatusPending: stored, not sent yet; the sender loop will try.
	StatusPending Status = iota + 1
	// StatusSent: handed to the mail server or written to the mail
	// directory.
	StatusSent
	// StatusFailed: given up on; Notification.Error says why.
	StatusFailed
)

// String returns the status as stored: PENDING, SENT or FAILED.
func (s Status) String() string {
	switch s {
	case StatusPending:
		return "PENDING"
	case StatusSent:
		return "SENT"
	case StatusFailed:
		return "FAILED"
	}
	return "UNKNOWN"
}

// parseStatus reads a status stored by String.
func parseStatus(s string) Status {
	switch s {
	case "PENDING":
		return StatusPending
	case "SENT":
		return StatusSent
	case "FAILED":
		return StatusFailed
	}
	return 0
}

// proto returns the API status; a pending notification has none.
func (s Status) proto() notifyv1.NotificationStatus {
	switch s {
	case StatusSent:
		return notifyv1.NotificationStatus_NOTIFICATION_STATUS_SENT
	case StatusFailed:
		return notifyv1.NotificationStatus_NOTIFICATION_STATUS_FAILED
	}
	return notifyv1.NotificationStatus_NOTIFICATION_STATUS_UNSPECIFIED
}

// ChannelEmail is the channel of every notification so far.
const ChannelEmail = "email"

// Notification is one message to a user, rendered when the event that
// caused it was handled.
type Notification struct {
	ID        string
	UserID    string
	EventID   string
	EventType string
	// Channel is ChannelEmail.
	Channel string
	// Recipient is the bare e-mail address; RecipientName the user's
	// display name, for the To header.
	Recipient     string
	RecipientName string
	Subject       string
	// Template names the template it was rendered from, such as
	// "order_confirmed".
	Template string
	// Body is the plain-text body.
	Body   string
	Status Status
	// Error says why the last attempt failed (and why a FAILED
	// notification was given up on).
	Error string
	// Attempts counts the sending attempts begun.
	Attempts int
	// NextAttempt is when a pending notification is next due.
	NextAttempt time.Time
	Created     time.Time
	// Finished is when it was sent or given up on; zero while pending.
	Finished time.Time
}

// User is what notify knows of a user, from UserRegistered.
type User struct {
	ID          string
	Email       string
	DisplayName string
}

// Cursor is a position in a listing of finished notifications, newest
// first: the last one returned.
type Cursor struct {
	Finished time.Time
	ID       string
}
