package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is the start of every fake clock.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a settable time source, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(t0.UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *clock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) At(d time.Duration) func() time.Time {
	return func() time.Time { return c.Now().Add(d) }
}

// countingSource serves the keys of an issuer (or a fixed error) and counts
// its calls.
type countingSource struct {
	mu    sync.Mutex
	src   auth.KeySource
	err   error
	calls atomic.Int64
}

func (s *countingSource) Keys(ctx context.Context) ([]auth.JWK, error) {
	s.calls.Add(1)
	s.mu.Lock()
	src, err := s.src, s.err
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return src.Keys(ctx)
}

func (s *countingSource) fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

var errSourceDown = errors.New("identity is down")

// fixture is an issuer and a verifier that trusts it, on one fake clock.
type fixture struct {
	clock    *clock
	issuer   *auth.Issuer
	key      ed25519.PrivateKey // the issuer's signing key
	source   *countingSource
	verifier *auth.Verifier
}

func newFixture(t testing.TB, opts ...auth.VerifierOption) *fixture {
	t.Helper()
	f := &fixture{clock: newClock(), key: newKey(t)}
	path := filepath.Join(t.TempDir(), "keys.pem")
	writeKeyFile(t, path, f.key)
	f.issuer = newIssuer(t, f.clock, auth.DefaultIssuer, auth.DefaultAudience, 0, auth.WithKeyFile(path))
	f.source = &countingSource{src: f.issuer}
	v, err := auth.NewVerifier(f.source, auth.DefaultIssuer, auth.DefaultAudience, opts...)
	if err != nil {
		t.Fatal(err)
	}
	auth.SetVerifierClock(v, f.clock.Now)
	f.verifier = v
	return f
}

// newIssuer returns an issuer whose clock is c shifted by skew.
func newIssuer(t testing.TB, c *clock, iss, aud string, skew time.Duration, opts ...auth.IssuerOption) *auth.Issuer {
	t.Helper()
	i, err := auth.NewIssuer(iss, aud, opts...)
	if err != nil {
		t.Fatal(err)
	}
	auth.SetIssuerClock(i, c.At(skew))
	return i
}

func issue(t testing.TB, i *auth.Issuer, sub string, roles ...string) (string, auth.Claims) {
	t.Helper()
	tok, claims, err := i.Issue(context.Background(), sub, roles, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok, claims
}

// currentKid returns the kid the issuer signs with.
func currentKid(t testing.TB, i *auth.Issuer) string {
	t.Helper()
	return i.JWKS()[0].Kid
}

// claimsAt returns a full set of valid claims at now.
func claimsAt(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss":   auth.DefaultIssuer,
		"sub":   "user-1",
		"aud":   auth.DefaultAudience,
		"exp":   now.Add(10 * time.Minute).Unix(),
		"nbf":   now.Unix(),
		"iat":   now.Unix(),
		"jti":   "crafted-jti",
		"roles": []string{"customer"},
	}
}

// craft signs claims with method and key under header (typ at+jwt unless
// header says otherwise).
func craft(t testing.TB, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["typ"] = "at+jwt"
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
			continue
		}
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsignedToken builds header.payload.signature from JSON values as they are.
func unsignedToken(t testing.TB, header, claims any, sig []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(sig)
}

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// checkStatus fails t unless err is a status with code and, in domain
// status.KitDomain, reason; and its message does not contain secret.
func checkStatus(t testing.TB, what string, err error, code codes.Code, reason, secret string) {
	t.Helper()
	st, ok := grpcstatus.FromError(err)
	if !ok || err == nil {
		t.Errorf("%s: error = %v, want a %v status", what, err, code)
		return
	}
	if st.Code() != code {
		t.Errorf("%s: code = %v, want %v (%v)", what, st.Code(), code, err)
	}
	info := status.Info(err)
	if info == nil || info.GetReason() != reason || info.GetDomain() != status.KitDomain {
		t.Errorf("%s: ErrorInfo = %v, want reason %s in domain %s", what, info, reason, status.KitDomain)
	}
	if secret != "" && strings.Contains(err.Error(), secret) {
		t.Errorf("%s: error %q echoes the token", what, err)
	}
}
