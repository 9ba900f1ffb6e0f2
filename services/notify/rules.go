package notify

import (
	notifyv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/notify/v1"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// MaxPageTokenLen bounds a ListNotifications page token.
const MaxPageTokenLen = 200

// Rules adds the validation rules of every NotifyService request to s.
func Rules(s *validate.Set) {
	validate.Rule(s, func(m *notifyv1.ListNotificationsRequest, v *validate.Violations) {
		v.Length("user_id", m.GetUserId(), 0, MaxIDLen)
		v.Range("page_size", int64(m.GetPageSize()), 0, MaxPageSize)
		v.Length("page_token", m.GetPageToken(), 0, MaxPageTokenLen)
	})
}
