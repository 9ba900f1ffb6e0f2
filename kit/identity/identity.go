// Package identity says who is calling: the service whose verified mTLS
// certificate opened the connection, and the end user whose verified
// access token came with the call. kit/auth puts both in the request
// context; handlers, authorization and logs read them from there.
//
// Identities are set only by the kit after verification. Nothing a caller
// writes in metadata (a user-id header, say) becomes an identity.
package identity

import (
	"context"
	"log/slog"
	"time"
)

// TrustDomain is the SPIFFE trust domain of Switchboard's service
// identities: a service named "order" is spiffe://switchboard.local/order.
const TrustDomain = "switchboard.local"

// Service is a calling service, from its verified peer certificate.
type Service struct {
	// Name is the service name, for example "order" or "operator".
	Name string
	// SPIFFEID is the certificate's URI SAN, for example
	// "spiffe://switchboard.local/order".
	SPIFFEID string
}

// User is an end user, from a verified access token.
type User struct {
	// ID is the token's subject: the user id.
	ID string
	// Roles are the roles the token grants, for example "customer".
	Roles []string
	// TokenID is the token's jti, used for revocation.
	TokenID string
	// ExpiresAt is when the token expires.
	ExpiresAt time.Time
	// Token is the raw access token, forwarded on outgoing calls so that
	// every service can verify the user for itself. It is never logged.
	Token Secret
}

// HasRole reports whether u has role.
func (u *User) HasRole(role string) bool {
	if u == nil {
		return false
	}
	for _, r := range u.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// Secret is a string that never prints: logs and fmt see "[REDACTED]".
type Secret string

// String implements fmt.Stringer.
func (Secret) String() string { return "[REDACTED]" }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// GoString implements fmt.GoStringer, so %#v redacts too.
func (Secret) GoString() string { return `"[REDACTED]"` }

type serviceKey struct{}
type userKey struct{}

// WithService returns ctx carrying the calling service.
func WithService(ctx context.Context, s *Service) context.Context {
	return context.WithValue(ctx, serviceKey{}, s)
}

// ServiceFrom returns the calling service, or nil when the caller
// presented no verified service certificate.
func ServiceFrom(ctx context.Context) *Service {
	s, _ := ctx.Value(serviceKey{}).(*Service)
	return s
}

// WithUser returns ctx carrying the end user.
func WithUser(ctx context.Context, u *User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserFrom returns the end user, or nil when the call carried no verified
// access token.
func UserFrom(ctx context.Context) *User {
	u, _ := ctx.Value(userKey{}).(*User)
	return u
}

// Describe names the caller for logs: "user:<id> via <service>",
// "<service>" or "anonymous".
func Describe(ctx context.Context) string {
	s, u := ServiceFrom(ctx), UserFrom(ctx)
	switch {
	case u != nil && s != nil:
		return "user:" + u.ID + " via " + s.Name
	case u != nil:
		return "user:" + u.ID
	case s != nil:
		return s.Name
	}
	return "anonymous"
}
