package identity

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	svc := &Service{Name: "order", SPIFFEID: "spiffe://switchboard.local/order"}
	usr := &User{ID: "u1", Roles: []string{"customer"}}
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"anonymous", context.Background(), "anonymous"},
		{"service", WithService(context.Background(), svc), "order"},
		{"user", WithUser(context.Background(), usr), "user:u1"},
		{"both", WithUser(WithService(context.Background(), svc), usr), "user:u1 via order"},
	}
	for _, tt := range tests {
		if got := Describe(tt.ctx); got != tt.want {
			t.Errorf("Describe(%s) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestHasRole(t *testing.T) {
	u := &User{Roles: []string{"customer", "admin"}}
	if !u.HasRole("admin") || u.HasRole("root") {
		t.Errorf("HasRole on %v is wrong", u.Roles)
	}
	var none *User
	if none.HasRole("admin") {
		t.Error("nil user has a role")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	u := User{ID: "u1", Token: "eyJhbGciOi.secret.token"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", slog.Any("token", u.Token))
	for _, out := range []string{fmt.Sprint(u.Token), fmt.Sprintf("%v %+v %#v", u, u, u), buf.String()} {
		if strings.Contains(out, "secret") {
			t.Errorf("token leaked: %s", out)
		}
	}
}
