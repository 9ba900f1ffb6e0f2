package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/auth/revocation"
	"github.com/switchboard-rpc/switchboard/kit/identity"
)

func TestVerifyValid(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name  string
		token func() string
		at    time.Duration // verifier time relative to issue time
		roles []string
	}{
		{"fresh", func() string { tok, _ := issue(t, f.issuer, "user-1", "customer"); return tok }, 0, []string{"customer"}},
		{"no roles", func() string { tok, _ := issue(t, f.issuer, "user-1"); return tok }, 0, nil},
		{"expired within leeway", func() string { tok, _ := issue(t, f.issuer, "user-1"); return tok }, auth.DefaultTTL + 29*time.Second, nil},
		{"nbf within leeway", func() string { tok, _ := issue(t, f.issuer, "user-1"); return tok }, -29 * time.Second, nil},
		{"typ application/at+jwt", func() string {
			return craft(t, jwt.SigningMethodEdDSA, f.key, map[string]any{"kid": currentKid(t, f.issuer), "typ": "application/at+jwt"}, claimsAt(f.clock.Now()))
		}, 0, []string{"customer"}},
		{"aud array", func() string {
			c := claimsAt(f.clock.Now())
			c["aud"] = []string{"other", auth.DefaultAudience}
			return craft(t, jwt.SigningMethodEdDSA, f.key, map[string]any{"kid": currentKid(t, f.issuer)}, c)
		}, 0, []string{"customer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.clock.Set(t0)
			tok := tt.token()
			f.clock.Advance(tt.at)
			u, err := f.verifier.Verify(t.Context(), tok)
			if err != nil {
				t.Fatalf("Verify = %v, want a user", err)
			}
			if u.ID != "user-1" || u.TokenID == "" || string(u.Token) != tok || !cmp.Equal(u.Roles, tt.roles, cmpEmpty) {
				t.Errorf("Verify = %+v, want user-1 with roles %v, a jti and the token", u, tt.roles)
			}
		})
	}
}

var cmpEmpty = cmp.Comparer(func(a, b []string) bool { return len(a) == 0 && len(b) == 0 || cmp.Equal(a, b) })

func TestVerifyRejects(t *testing.T) {
	f := newFixture(t)
	good := f.key
	kid := currentKid(t, f.issuer)
	pub := good.Public().(ed25519.PublicKey)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now()
	withClaims := func(edit func(jwt.MapClaims)) string {
		c := claimsAt(now)
		edit(c)
		return craft(t, jwt.SigningMethodEdDSA, good, map[string]any{"kid": kid}, c)
	}
	valid := withClaims(func(jwt.MapClaims) {})
	parts := strings.Split(valid, ".")
	otherIss := newIssuer(t, f.clock, "spiffe://elsewhere/identity", auth.DefaultAudience, 0)
	otherAud := newIssuer(t, f.clock, auth.DefaultIssuer, "another-audience", 0)

	tests := []struct {
		name   string
		token  string
		code   codes.Code
		reason string
	}{
		{"empty", "", codes.Unauthenticated, auth.ReasonTokenMissing},
		{"garbage", "not a token", codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"two segments", parts[0] + "." + parts[1], codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"bad base64", parts[0] + ".!!!." + parts[2], codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"too long", valid + strings.Repeat("A", auth.MaxTokenLength), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"forged: right kid, other key", craft(t, jwt.SigningMethodEdDSA, newKey(t), map[string]any{"kid": kid}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"tampered payload", parts[0] + "." + strings.Split(withClaims(func(c jwt.MapClaims) { c["sub"] = "admin" }), ".")[1] + "." + parts[2], codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"signature cut", parts[0] + "." + parts[1] + ".", codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"unknown kid", craft(t, jwt.SigningMethodEdDSA, newKey(t), map[string]any{"kid": "no-such-key"}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenUnknownKey},
		{"alg none", craft(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": kid}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"alg HS256 keyed with the public key", craft(t, jwt.SigningMethodHS256, []byte(pub), map[string]any{"kid": kid}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"alg HS256 keyed with the JWK x", craft(t, jwt.SigningMethodHS256, []byte(f.issuer.JWKS()[0].X), map[string]any{"kid": kid}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"alg ES256", craft(t, jwt.SigningMethodES256, ecKey, map[string]any{"kid": kid}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"alg unknown", unsignedToken(t, map[string]any{"alg": "XX", "kid": kid, "typ": "at+jwt"}, claimsAt(now), []byte("sig")), codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"alg missing", unsignedToken(t, map[string]any{"kid": kid, "typ": "at+jwt"}, claimsAt(now), []byte("sig")), codes.Unauthenticated, auth.ReasonTokenInvalidSignature},
		{"typ JWT", craft(t, jwt.SigningMethodEdDSA, good, map[string]any{"kid": kid, "typ": "JWT"}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"typ missing", craft(t, jwt.SigningMethodEdDSA, good, map[string]any{"kid": kid, "typ": nil}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"kid missing", craft(t, jwt.SigningMethodEdDSA, good, nil, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"kid not a string", craft(t, jwt.SigningMethodEdDSA, good, map[string]any{"kid": 7}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"crit header", craft(t, jwt.SigningMethodEdDSA, good, map[string]any{"kid": kid, "crit": []string{"exp"}}, claimsAt(now)), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"wrong issuer", issueTok(t, otherIss), codes.Unauthenticated, auth.ReasonTokenUnknownKey},
		{"wrong issuer, trusted key", withClaims(func(c jwt.MapClaims) { c["iss"] = "spiffe://elsewhere/identity" }), codes.Unauthenticated, auth.ReasonTokenWrongIssuer},
		{"issuer missing", withClaims(func(c jwt.MapClaims) { delete(c, "iss") }), codes.Unauthenticated, auth.ReasonTokenWrongIssuer},
		{"wrong audience", issueTok(t, otherAud), codes.Unauthenticated, auth.ReasonTokenUnknownKey},
		{"wrong audience, trusted key", withClaims(func(c jwt.MapClaims) { c["aud"] = "another-audience" }), codes.Unauthenticated, auth.ReasonTokenWrongAudience},
		{"audience missing", withClaims(func(c jwt.MapClaims) { delete(c, "aud") }), codes.Unauthenticated, auth.ReasonTokenWrongAudience},
		{"expired", withClaims(func(c jwt.MapClaims) { c["exp"] = now.Add(-31 * time.Second).Unix() }), codes.Unauthenticated, auth.ReasonTokenExpired},
		{"not yet valid", withClaims(func(c jwt.MapClaims) { c["nbf"] = now.Add(31 * time.Second).Unix() }), codes.Unauthenticated, auth.ReasonTokenNotYetValid},
		{"issued in the future", withClaims(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() }), codes.Unauthenticated, auth.ReasonTokenNotYetValid},
		{"sub missing", withClaims(func(c jwt.MapClaims) { delete(c, "sub") }), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"jti missing", withClaims(func(c jwt.MapClaims) { delete(c, "jti") }), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"exp missing", withClaims(func(c jwt.MapClaims) { delete(c, "exp") }), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"nbf missing", withClaims(func(c jwt.MapClaims) { delete(c, "nbf") }), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"iat missing", withClaims(func(c jwt.MapClaims) { delete(c, "iat") }), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"exp not a number", withClaims(func(c jwt.MapClaims) { c["exp"] = "tomorrow" }), codes.Unauthenticated, auth.ReasonTokenMalformed},
		{"roles not strings", withClaims(func(c jwt.MapClaims) { c["roles"] = []int{1} }), codes.Unauthenticated, auth.ReasonTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := f.verifier.Verify(t.Context(), tt.token)
			if u != nil {
				t.Errorf("Verify returned user %+v", u)
			}
			checkStatus(t, "Verify", err, tt.code, tt.reason, tt.token)
		})
	}
}

func issueTok(t testing.TB, i *auth.Issuer) string {
	t.Helper()
	tok, _ := issue(t, i, "user-1")
	return tok
}

// Expiry, not-yet-valid and the other claims checked with tokens from a
// real Issuer whose clock is off, and from issuers the verifier trusts but
// which name another iss or aud.
func TestVerifyRejectsIssuedTokens(t *testing.T) {
	c := newClock()
	tests := []struct {
		name     string
		iss, aud string
		skew     time.Duration
		reason   string
	}{
		{"expired", auth.DefaultIssuer, auth.DefaultAudience, -time.Hour, auth.ReasonTokenExpired},
		{"not yet valid", auth.DefaultIssuer, auth.DefaultAudience, 5 * time.Minute, auth.ReasonTokenNotYetValid},
		{"wrong issuer", "spiffe://elsewhere/identity", auth.DefaultAudience, 0, auth.ReasonTokenWrongIssuer},
		{"wrong audience", auth.DefaultIssuer, "another-audience", 0, auth.ReasonTokenWrongAudience},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := newIssuer(t, c, tt.iss, tt.aud, tt.skew)
			v, err := auth.NewVerifier(i, auth.DefaultIssuer, auth.DefaultAudience)
			if err != nil {
				t.Fatal(err)
			}
			auth.SetVerifierClock(v, c.Now)
			tok := issueTok(t, i)
			_, err = v.Verify(t.Context(), tok)
			checkStatus(t, "Verify", err, codes.Unauthenticated, tt.reason, tok)
		})
	}
}

func TestVerifyCache(t *testing.T) {
	f := newFixture(t, auth.WithCacheSize(100))
	tok, _ := issue(t, f.issuer, "user-1", "customer")
	u1, err := f.verifier.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	u2, err := f.verifier.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if u1 != u2 {
		t.Errorf("cached Verify returned %p, want the same user %p", u2, u1)
	}
	if want := (&identity.User{ID: "user-1", Roles: []string{"customer"}, TokenID: u1.TokenID, ExpiresAt: t0.Add(auth.DefaultTTL), Token: identity.Secret(tok)}); !cmp.Equal(u1, want) {
		t.Errorf("Verify = %+v, want %+v", u1, want)
	}
	if got := cap(u1.Roles); got != len(u1.Roles) {
		t.Errorf("cap(Roles) = %d, want %d so that appending copies", got, len(u1.Roles))
	}

	// The cached entry expires with the token (plus leeway).
	f.clock.Advance(auth.DefaultTTL + auth.DefaultLeeway)
	_, err = f.verifier.Verify(t.Context(), tok)
	checkStatus(t, "Verify after expiry", err, codes.Unauthenticated, auth.ReasonTokenExpired, tok)
	_, err = f.verifier.Verify(t.Context(), tok)
	checkStatus(t, "Verify after expiry, again", err, codes.Unauthenticated, auth.ReasonTokenExpired, tok)

	// Without a cache every call verifies, and still gives the same answer.
	g := newFixture(t, auth.WithCacheSize(0))
	tok, _ = issue(t, g.issuer, "user-1")
	for range 2 {
		if u, err := g.verifier.Verify(t.Context(), tok); err != nil || u.ID != "user-1" {
			t.Errorf("uncached Verify = %+v, %v; want user-1", u, err)
		}
	}
}

func TestVerifyCachedTokenIsDroppedWhenItsKeyIs(t *testing.T) {
	f := newFixture(t, auth.WithKeyMaxAge(time.Minute))
	tok, _ := issue(t, f.issuer, "user-1")
	if _, err := f.verifier.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	// The identity service drops the key (say it leaked): the key set
	// served no longer has it.
	other := newIssuer(t, f.clock, auth.DefaultIssuer, auth.DefaultAudience, 0)
	f.source.mu.Lock()
	f.source.src = other
	f.source.mu.Unlock()
	f.clock.Advance(2 * time.Minute) // the key set is stale
	// Any token needing a key refreshes the set...
	if _, err := f.verifier.Verify(t.Context(), issueTok(t, other)); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	// ...and the cached token of the dropped key is verified again.
	_, err := f.verifier.Verify(t.Context(), tok)
	checkStatus(t, "Verify of a token whose key was dropped", err, codes.Unauthenticated, auth.ReasonTokenUnknownKey, tok)
}

func TestUnknownKidRefreshesOnce(t *testing.T) {
	f := newFixture(t)
	tok, _ := issue(t, f.issuer, "user-1")
	if _, err := f.verifier.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	if got := f.source.calls.Load(); got != 1 {
		t.Fatalf("key source called %d times for the first token, want 1", got)
	}
	if _, err := f.verifier.Verify(t.Context(), issueTok(t, f.issuer)); err != nil {
		t.Fatal(err)
	}
	if got := f.source.calls.Load(); got != 1 {
		t.Errorf("key source called %d times after a second token of a known key, want 1", got)
	}

	if err := f.issuer.Rotate(); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(auth.DefaultRefreshInterval)
	rotated := issueTok(t, f.issuer)
	if _, err := f.verifier.Verify(t.Context(), rotated); err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	if got := f.source.calls.Load(); got != 2 {
		t.Errorf("key source called %d times after a new kid, want 2", got)
	}

	// A burst of forged kids within the refresh interval refreshes at most
	// once more.
	f.clock.Advance(auth.DefaultRefreshInterval)
	before := f.source.calls.Load()
	var wg sync.WaitGroup
	for range 100 {
		forged := craft(t, jwt.SigningMethodEdDSA, newKey(t), map[string]any{"kid": rand.Text()}, claimsAt(f.clock.Now()))
		wg.Go(func() {
			_, err := f.verifier.Verify(t.Context(), forged)
			checkStatus(t, "forged kid", err, codes.Unauthenticated, auth.ReasonTokenUnknownKey, forged)
		})
	}
	wg.Wait()
	if got := f.source.calls.Load() - before; got > 2 {
		t.Errorf("100 forged kids caused %d refreshes, want at most 2", got)
	}
	if got := f.source.calls.Load() - before; got < 1 {
		t.Errorf("100 forged kids after the refresh interval caused %d refreshes, want 1", got)
	}
}

func TestForgedKidBurstOnColdVerifier(t *testing.T) {
	f := newFixture(t)
	var wg sync.WaitGroup
	for range 100 {
		forged := craft(t, jwt.SigningMethodEdDSA, newKey(t), map[string]any{"kid": rand.Text()}, claimsAt(f.clock.Now()))
		wg.Go(func() {
			_, err := f.verifier.Verify(t.Context(), forged)
			checkStatus(t, "forged kid", err, codes.Unauthenticated, auth.ReasonTokenUnknownKey, forged)
		})
	}
	wg.Wait()
	if got := f.source.calls.Load(); got > 2 {
		t.Errorf("100 forged kids caused %d key fetches, want at most 2", got)
	}
}

func TestKeySourceFailure(t *testing.T) {
	f := newFixture(t, auth.WithKeyMaxAge(time.Minute))
	f.source.fail(errSourceDown)
	tok := issueTok(t, f.issuer)
	_, err := f.verifier.Verify(t.Context(), tok)
	checkStatus(t, "Verify with no keys", err, codes.Unavailable, auth.ReasonKeysUnavailable, tok)
	_, err = f.verifier.Verify(t.Context(), tok)
	checkStatus(t, "Verify with no keys, again", err, codes.Unavailable, auth.ReasonKeysUnavailable, tok)
	if got := f.source.calls.Load(); got != 1 {
		t.Errorf("key source called %d times within the refresh interval, want 1", got)
	}

	f.source.fail(nil)
	f.clock.Advance(auth.DefaultRefreshInterval)
	if _, err := f.verifier.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify once the source is back: %v", err)
	}

	// The source fails again after the key set went stale: the last good
	// set is kept.
	f.source.fail(errSourceDown)
	f.clock.Advance(2 * time.Minute)
	if _, err := f.verifier.Verify(t.Context(), issueTok(t, f.issuer)); err != nil {
		t.Errorf("Verify with a stale key set and the source down: %v", err)
	}
	if got := f.source.calls.Load(); got != 3 {
		t.Errorf("key source called %d times, want 3 (first, recovery, stale refresh)", got)
	}
}

func TestKeySourceWithUnusableKeys(t *testing.T) {
	c := newClock()
	i := newIssuer(t, c, auth.DefaultIssuer, auth.DefaultAudience, 0)
	good := i.JWKS()[0]
	bad := []auth.JWK{
		{Kty: "RSA", Crv: "Ed25519", X: good.X, Kid: "a"},
		{Kty: "OKP", Crv: "X25519", X: good.X, Kid: "b"},
		{Kty: "OKP", Crv: "Ed25519", X: good.X, Kid: "c", Alg: "HS256"},
		{Kty: "OKP", Crv: "Ed25519", X: good.X, Kid: "d", Use: "enc"},
		{Kty: "OKP", Crv: "Ed25519", X: good.X},
		{Kty: "OKP", Crv: "Ed25519", X: "c2hvcnQ", Kid: "e"},
		{Kty: "OKP", Crv: "Ed25519", X: good.X + "=", Kid: "f"},
	}
	for _, k := range bad {
		if _, err := k.PublicKey(); err == nil {
			t.Errorf("%+v.PublicKey() succeeded, want an error", k)
		}
	}
	src := auth.KeySourceFunc(func(context.Context) ([]auth.JWK, error) { return append(bad, good), nil })
	v, err := auth.NewVerifier(src, auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	auth.SetVerifierClock(v, c.Now)
	if _, err := v.Verify(t.Context(), issueTok(t, i)); err != nil {
		t.Errorf("Verify with unusable keys beside the good one: %v", err)
	}

	onlyBad := auth.KeySourceFunc(func(context.Context) ([]auth.JWK, error) { return bad, nil })
	v, err = auth.NewVerifier(onlyBad, auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	auth.SetVerifierClock(v, c.Now)
	_, err = v.Verify(t.Context(), issueTok(t, i))
	checkStatus(t, "Verify with only unusable keys", err, codes.Unavailable, auth.ReasonKeysUnavailable, "")
}

func TestNewVerifierErrors(t *testing.T) {
	i := newIssuer(t, newClock(), "i", "a", 0)
	tests := []struct {
		name     string
		src      auth.KeySource
		iss, aud string
		opts     []auth.VerifierOption
	}{
		{"nil source", nil, "i", "a", nil},
		{"empty issuer", i, "", "a", nil},
		{"empty audience", i, "i", "", nil},
		{"negative leeway", i, "i", "a", []auth.VerifierOption{auth.WithLeeway(-1)}},
		{"negative cache", i, "i", "a", []auth.VerifierOption{auth.WithCacheSize(-1)}},
		{"zero key max age", i, "i", "a", []auth.VerifierOption{auth.WithKeyMaxAge(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := auth.NewVerifier(tt.src, tt.iss, tt.aud, tt.opts...); err == nil {
				t.Error("NewVerifier succeeded, want an error")
			}
		})
	}
}

func TestVerifyRevoked(t *testing.T) {
	c := newClock()
	c.Set(time.Now()) // the store runs on real time
	testRevocation(t, c, revocation.NewMemory(0))
}

// testRevocation checks that a token revoked in r is refused, cached or
// not, and that others are not.
func testRevocation(t *testing.T, c *clock, r auth.Revocations) {
	t.Helper()
	i := newIssuer(t, c, auth.DefaultIssuer, auth.DefaultAudience, 0)
	for _, size := range []int{auth.DefaultCacheSize, 0} {
		v, err := auth.NewVerifier(i, auth.DefaultIssuer, auth.DefaultAudience, auth.WithRevocations(r), auth.WithCacheSize(size))
		if err != nil {
			t.Fatal(err)
		}
		auth.SetVerifierClock(v, c.Now)
		tok, claims := issue(t, i, "user-1")
		other := issueTok(t, i)
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatalf("Verify before revocation (cache %d): %v", size, err)
		}
		if err := r.Revoke(t.Context(), claims.ID, claims.ExpiresAt.Add(auth.DefaultLeeway)); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			_, err := v.Verify(t.Context(), tok)
			checkStatus(t, "Verify of a revoked token", err, codes.Unauthenticated, auth.ReasonTokenRevoked, tok)
		}
		if _, err := v.Verify(t.Context(), other); err != nil {
			t.Errorf("Verify of another token (cache %d): %v", size, err)
		}
	}
}

// failingRevocations never answers.
type failingRevocations struct{ err error }

func (f failingRevocations) Revoke(context.Context, string, time.Time) error { return f.err }
func (f failingRevocations) IsRevoked(context.Context, string) (bool, error) { return false, f.err }

func TestRevocationFailureFailsClosed(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		code   codes.Code
		reason string
	}{
		{"store down", errSourceDown, codes.Unavailable, auth.ReasonRevocationUnavailable},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "DEADLINE_EXCEEDED"},
		{"canceled", context.Canceled, codes.Canceled, "CANCELLED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, auth.WithRevocations(failingRevocations{tt.err}))
			tok := issueTok(t, f.issuer)
			for range 2 { // uncached, then cached
				u, err := f.verifier.Verify(t.Context(), tok)
				if u != nil {
					t.Errorf("Verify returned %+v with the revocation store failing", u)
				}
				checkStatus(t, "Verify", err, tt.code, tt.reason, tok)
			}
		})
	}
}

func TestVerifyConcurrent(t *testing.T) {
	f := newFixture(t, auth.WithRevocations(revocation.NewMemory(0)))
	toks := make([]string, 8)
	for n := range toks {
		toks[n] = issueTok(t, f.issuer)
	}
	var wg sync.WaitGroup
	for n := range 64 {
		wg.Go(func() {
			for k := range 50 {
				if _, err := f.verifier.Verify(t.Context(), toks[(n+k)%len(toks)]); err != nil {
					t.Errorf("Verify: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}
