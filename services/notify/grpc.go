package notify

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	notifyv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/notify/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/identity"
)

// Paging of ListNotifications.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// handlers is the gRPC edge of the service: it converts messages and maps
// every error once, with the service's status table. Requests arrive
// validated by Rules.
type handlers struct {
	notifyv1.UnimplementedNotifyServiceServer
	svc *Service
}

var _ notifyv1.NotifyServiceServer = (*handlers)(nil)

// ListNotifications lists finished notifications newest first, a page at
// a time: the calling user's own, or, for the operator without a user,
// those of the user asked for, or everyone's.
func (h *handlers) ListNotifications(ctx context.Context, req *notifyv1.ListNotificationsRequest) (*notifyv1.ListNotificationsResponse, error) {
	userID, err := listScope(ctx, req.GetUserId())
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	var after *Cursor
	if t := req.GetPageToken(); t != "" {
		if after, err = decodePageToken(t); err != nil {
			return nil, h.svc.table.Map(ctx, err)
		}
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	ns, err := h.svc.store.List(ctx, userID, after, size+1)
	if err != nil {
		return nil, h.svc.table.Map(ctx, err)
	}
	resp := &notifyv1.ListNotificationsResponse{}
	if len(ns) > size {
		ns = ns[:size]
		last := ns[size-1]
		resp.NextPageToken = encodePageToken(Cursor{Finished: last.Finished, ID: last.ID})
	}
	resp.Notifications = make([]*notifyv1.Notification, len(ns))
	for i := range ns {
		resp.Notifications[i] = notificationToProto(&ns[i])
	}
	return resp, nil
}

// listScope returns whose notifications the caller may list when asking
// for those of requested (empty: the caller's own): a verified user only
// their own (ErrNotOwner for another's); the operator service without a
// user anyone's, requested being empty for everyone's ("" returned).
func listScope(ctx context.Context, requested string) (string, error) {
	if u := identity.UserFrom(ctx); u != nil && u.ID != "" {
		if requested != "" && requested != u.ID {
			return "", ErrNotOwner
		}
		return u.ID, nil
	}
	if svc := identity.ServiceFrom(ctx); svc != nil && svc.Name == authz.Operator {
		return requested, nil
	}
	return "", ErrUserRequired
}

func notificationToProto(n *Notification) *notifyv1.Notification {
	return &notifyv1.Notification{
		NotificationId: n.ID,
		UserId:         n.UserID,
		EventId:        n.EventID,
		EventType:      n.EventType,
		Channel:        n.Channel,
		Recipient:      n.Recipient,
		Subject:        n.Subject,
		Template:       n.Template,
		Status:         n.Status.proto(),
		Error:          n.Error,
		CreateTime:     timestamppb.New(n.Finished),
	}
}

// encodePageToken makes the opaque token of a listing position.
func encodePageToken(c Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(sqldb.Micros(c.Finished), 10) + "." + c.ID))
}

// decodePageToken reads a token made by encodePageToken.
func decodePageToken(t string) (*Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil {
		return nil, ErrInvalidPageToken
	}
	us, id, ok := strings.Cut(string(raw), ".")
	if !ok || id == "" || len(id) > MaxIDLen {
		return nil, ErrInvalidPageToken
	}
	n, err := strconv.ParseInt(us, 10, 64)
	if err != nil || n < 0 {
		return nil, ErrInvalidPageToken
	}
	return &Cursor{Finished: sqldb.Time(n), ID: id}, nil
}
