package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/internal/greetertest"
	"github.com/switchboard-rpc/switchboard/internal/testpki"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/auth/revocation"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/server"
)

// whoami is a Greeter whose SayHello reports the identities in its context.
func whoami() *greetertest.Fake {
	return &greetertest.Fake{
		SayHelloFunc: func(ctx context.Context, _ *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
			return &greeterv1.SayHelloResponse{Message: describe(ctx)}, nil
		},
	}
}

func describe(ctx context.Context) string {
	var b strings.Builder
	if u := identity.UserFrom(ctx); u != nil {
		fmt.Fprintf(&b, "user=%s roles=%s forwarded=%t", u.ID, strings.Join(u.Roles, ","), u.Token != "")
	} else {
		b.WriteString("user=none")
	}
	if s := identity.ServiceFrom(ctx); s != nil {
		fmt.Fprintf(&b, " service=%s", s.Name)
	}
	return b.String()
}

// serve starts the Greeter with f's verifier as the authenticator and
// returns a client.
func serve(t *testing.T, v *auth.Verifier) greeterv1.GreeterClient {
	t.Helper()
	_, addr := greetertest.Start(t, whoami(), server.WithAuthenticator(v.Authenticator()))
	c, _ := greetertest.Dial(t, addr, client.WithHealthCheck(false))
	return c
}

func callWith(t *testing.T, c greeterv1.GreeterClient, kv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	resp, err := c.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ada"})
	return resp.GetMessage(), err
}

func TestAuthenticatorOverGRPC(t *testing.T) {
	c := newClock()
	c.Set(time.Now().Truncate(time.Second)) // the server's revocation store runs on real time
	f := newFixture(t)
	f.clock.Set(c.Now())
	revoked := revocation.NewMemory(0)
	v, err := auth.NewVerifier(f.source, auth.DefaultIssuer, auth.DefaultAudience, auth.WithRevocations(revoked))
	if err != nil {
		t.Fatal(err)
	}
	auth.SetVerifierClock(v, f.clock.Now)
	cl := serve(t, v)

	kid := currentKid(t, f.issuer)
	now := f.clock.Now()
	good, _ := issue(t, f.issuer, "user-7", "customer", "admin")
	revokedTok, revokedClaims := issue(t, f.issuer, "user-8")
	if err := revoked.Revoke(t.Context(), revokedClaims.ID, revokedClaims.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	withClaims := func(edit func(jwt.MapClaims)) string {
		cl := claimsAt(now)
		edit(cl)
		return craft(t, jwt.SigningMethodEdDSA, f.key, map[string]any{"kid": kid}, cl)
	}
	pub := f.key.Public()

	ok := []struct {
		name string
		md   []string
		want string
	}{
		{"no token", nil, "user=none"},
		{"no token, x-user-id", []string{"x-user-id", "admin"}, "user=none"},
		{"valid token", []string{"authorization", "Bearer " + good}, "user=user-7 roles=customer,admin forwarded=true"},
		{"lower-case scheme", []string{"authorization", "bearer " + good}, "user=user-7 roles=customer,admin forwarded=true"},
		{"valid token, x-user-id", []string{"authorization", "Bearer " + good, "x-user-id", "admin", "x-user-roles", "admin"}, "user=user-7 roles=customer,admin forwarded=true"},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 { // uncached, then cached
				got, err := callWith(t, cl, tt.md...)
				if err != nil || got != tt.want {
					t.Errorf("SayHello with %q = %q, %v; want %q", tt.md, got, err, tt.want)
				}
			}
		})
	}

	bad := []struct {
		name   string
		header string
		code   codes.Code
		reason string
	}{
		{"forged", "Bearer " + craft(t, jwt.SigningMethodEdDSA, newKey(t), map[string]any{"kid": kid}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"other issuer's key", "Bearer " + issueTok(t, newIssuer(t, f.clock, auth.DefaultIssuer, auth.DefaultAudience, 0)), codes.Unauthenticated, auth.ReasonTokenUnknownKey},
		{"expired", "Bearer " + issueTok(t, newIssuerWithKey(t, f, -time.Hour)), codes.Unauthenticated, auth.ReasonTokenExpired},
		{"not yet valid", "Bearer " + issueTok(t, newIssuerWithKey(t, f, 10*time.Minute)), codes.Unauthenticated, auth.ReasonTokenNotYetValid},
		{"revoked", "Bearer " + revokedTok, codes.Unauthenticated, auth.ReasonTokenRevoked},
		{"wrong audience", "Bearer " + withClaims(func(c jwt.MapClaims) { c["aud"] = "elsewhere" }), codes.Unauthenticated, auth.ReasonTokenWrongAudience},
		{"wrong issuer", "Bearer " + withClaims(func(c jwt.MapClaims) { c["iss"] = "elsewhere" }), codes.Unauthenticated, auth.ReasonTokenWrongIssuer},
		{"alg none", "Bearer " + craft(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": kid}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"HS256 with the public key", "Bearer " + craft(t, jwt.SigningMethodHS256, []byte(pub.(ed25519.PublicKey)), map[string]any{"kid": kid}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"malformed", "Bearer abc.def", codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"basic scheme", "Basic dXNlcjpwYXNz", codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"token without scheme", good, codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"empty bearer", "Bearer ", codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"empty header", "", codes.Unauthenticated, auth.ReasonTokenMalformed},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			for _, md := range [][]string{
				{"authorization", tt.header},
				{"authorization", tt.header, "x-user-id", "admin"},
			} {
				got, err := callWith(t, cl, md...)
				if got != "" {
					t.Errorf("SayHello answered %q", got)
				}
				checkStatus(t, tt.name, err, tt.code, tt.reason, strings.TrimPrefix(tt.header, "Bearer "))
			}
		})
	}

	t.Run("two authorization entries", func(t *testing.T) {
		_, err := callWith(t, cl, "authorization", "Bearer "+good, "authorization", "Bearer "+good)
		checkStatus(t, "two authorization entries", err, codes.Unauthenticated, auth.ReasonTokenMalformed, good)
	})
}

// newIssuerWithKey returns an issuer with f's key whose clock is off by skew.
func newIssuerWithKey(t *testing.T, f *fixture, skew time.Duration) *auth.Issuer {
	t.Helper()
	path := t.TempDir() + "/keys.pem"
	writeKeyFile(t, path, f.key)
	return newIssuer(t, f.clock, auth.DefaultIssuer, auth.DefaultAudience, skew, auth.WithKeyFile(path))
}

func TestAuthenticatorRedisDownFailsClosed(t *testing.T) {
	f := newFixture(t)
	v, err := auth.NewVerifier(f.source, auth.DefaultIssuer, auth.DefaultAudience, auth.WithRevocations(downRedis(t)))
	if err != nil {
		t.Fatal(err)
	}
	auth.SetVerifierClock(v, f.clock.Now)
	cl := serve(t, v)
	tok := issueTok(t, f.issuer)
	got, err := callWith(t, cl, "authorization", "Bearer "+tok)
	if got != "" {
		t.Errorf("SayHello answered %q with the revocation store down", got)
	}
	checkStatus(t, "SayHello", err, codes.Unavailable, auth.ReasonRevocationUnavailable, tok)
	if got, err := callWith(t, cl); err != nil || got != "user=none" {
		t.Errorf("SayHello without a token = %q, %v; want user=none", got, err)
	}
}

func TestAuthenticatorServiceFromMTLS(t *testing.T) {
	f := newFixture(t)
	f.clock.Set(time.Now())
	pki := testpki.New()
	_, addr := greetertest.Start(t, whoami(),
		server.WithCredentials(credentials.NewTLS(pki.Server)),
		server.WithAuthenticator(f.verifier.Authenticator()))
	cl, _ := greetertest.Dial(t, addr, client.WithCredentials(credentials.NewTLS(pki.Client)), client.WithHealthCheck(false))

	if got, err := callWith(t, cl); err != nil || got != "user=none service=client" {
		t.Errorf("SayHello over mTLS = %q, %v; want user=none service=client", got, err)
	}
	tok, _ := issue(t, f.issuer, "user-1", "customer")
	if got, err := callWith(t, cl, "authorization", "Bearer "+tok, "x-service-name", "payment"); err != nil || got != "user=user-1 roles=customer forwarded=true service=client" {
		t.Errorf("SayHello over mTLS with a token = %q, %v", got, err)
	}
}

// The hook drops identities it did not establish itself.
func TestAuthenticatorIgnoresIdentitiesInContext(t *testing.T) {
	f := newFixture(t)
	hook := f.verifier.Authenticator()
	ctx := identity.WithUser(t.Context(), &identity.User{ID: "admin"})
	ctx = identity.WithService(ctx, &identity.Service{Name: "payment"})
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("x-user-id", "admin"))
	got, err := hook(ctx, server.Call{FullMethod: "/switchboard.greeter.v1.Greeter/SayHello"})
	if err != nil {
		t.Fatal(err)
	}
	if u, s := identity.UserFrom(got), identity.ServiceFrom(got); u != nil || s != nil {
		t.Errorf("identities after the hook = %+v, %+v; want none", u, s)
	}
}

// The service identity comes from the verified chain's leaf only.
func TestAuthenticatorPeerCertificates(t *testing.T) {
	f := newFixture(t)
	hook := f.verifier.Authenticator()
	leaf := func(uris ...string) *x509.Certificate {
		c := &x509.Certificate{}
		for _, u := range uris {
			p, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, p)
		}
		return c
	}
	tlsInfo := func(verified [][]*x509.Certificate, peerCerts ...*x509.Certificate) credentials.AuthInfo {
		return credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: verified, PeerCertificates: peerCerts}}
	}
	tests := []struct {
		name string
		info credentials.AuthInfo
		want string
	}{
		{"no auth info", nil, ""},
		{"verified", tlsInfo([][]*x509.Certificate{{leaf("spiffe://switchboard.local/order")}}), "order"},
		{"presented, not verified", tlsInfo(nil, leaf("spiffe://switchboard.local/order")), ""},
		{"other trust domain", tlsInfo([][]*x509.Certificate{{leaf("spiffe://evil.example/order")}}), ""},
		{"two URI SANs", tlsInfo([][]*x509.Certificate{{leaf("spiffe://switchboard.local/order", "spiffe://switchboard.local/admin")}}), ""},
		{"nested path", tlsInfo([][]*x509.Certificate{{leaf("spiffe://switchboard.local/order/admin")}}), ""},
		{"no URI SAN", tlsInfo([][]*x509.Certificate{{leaf()}}), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := peer.NewContext(t.Context(), &peer.Peer{AuthInfo: tt.info})
			got, err := hook(ctx, server.Call{})
			if err != nil {
				t.Fatal(err)
			}
			name := ""
			if s := identity.ServiceFrom(got); s != nil {
				name = s.Name
			}
			if name != tt.want {
				t.Errorf("service = %q, want %q", name, tt.want)
			}
		})
	}
}
