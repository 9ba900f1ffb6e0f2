package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/switchboard-rpc/switchboard/kit/auth"
)

// decodeSegment JSON-decodes segment i of a compact JWS.
func decodeSegment(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments, want 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestIssueTokenLayout(t *testing.T) {
	c := newClock()
	i := newIssuer(t, c, auth.DefaultIssuer, auth.DefaultAudience, 0)
	tok, claims, err := i.Issue(t.Context(), "user-42", []string{"customer", "admin"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	kid := currentKid(t, i)

	header := decodeSegment(t, tok, 0)
	wantHeader := map[string]any{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}
	if diff := cmp.Diff(wantHeader, header); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}

	payload := decodeSegment(t, tok, 1)
	jti, _ := payload["jti"].(string)
	if id, err := base64.RawURLEncoding.DecodeString(jti); err != nil || len(id) != 16 {
		t.Errorf("jti %q is not 128 bits of base64url (%v)", jti, err)
	}
	now := float64(t0.Unix())
	wantPayload := map[string]any{
		"iss":   auth.DefaultIssuer,
		"sub":   "user-42",
		"aud":   auth.DefaultAudience,
		"exp":   now + auth.DefaultTTL.Seconds(),
		"nbf":   now,
		"iat":   now,
		"jti":   jti,
		"roles": []any{"customer", "admin"},
	}
	if diff := cmp.Diff(wantPayload, payload); diff != "" {
		t.Errorf("payload (-want +got):\n%s", diff)
	}

	wantClaims := auth.Claims{
		Issuer: auth.DefaultIssuer, Subject: "user-42", Audience: auth.DefaultAudience,
		ExpiresAt: t0.Add(auth.DefaultTTL), IssuedAt: t0, NotBefore: t0,
		ID: jti, Roles: []string{"customer", "admin"}, KeyID: kid,
	}
	if diff := cmp.Diff(wantClaims, claims); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}

	_, again, err := i.Issue(t.Context(), "user-42", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID == claims.ID {
		t.Errorf("two tokens share jti %q", again.ID)
	}
	if got, want := again.ExpiresAt, t0.Add(time.Minute); !got.Equal(want) {
		t.Errorf("ExpiresAt with ttl 1m = %v, want %v", got, want)
	}
}

func TestIssueEmptyRolesIsArray(t *testing.T) {
	i := newIssuer(t, newClock(), auth.DefaultIssuer, auth.DefaultAudience, 0)
	tok, _ := issue(t, i, "user-1")
	roles, ok := decodeSegment(t, tok, 1)["roles"].([]any)
	if !ok || len(roles) != 0 {
		t.Errorf("roles = %v, want []", roles)
	}
}

func TestIssueErrors(t *testing.T) {
	i := newIssuer(t, newClock(), auth.DefaultIssuer, auth.DefaultAudience, 0, auth.WithMaxTTL(time.Hour))
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		subject string
		ttl     time.Duration
	}{
		{"empty subject", t.Context(), "", 0},
		{"negative ttl", t.Context(), "u", -time.Second},
		{"ttl above max", t.Context(), "u", time.Hour + time.Second},
		{"canceled context", canceled, "u", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tok, _, err := i.Issue(tt.ctx, tt.subject, nil, tt.ttl); err == nil {
				t.Errorf("Issue(%q, %v) = %q, nil; want an error", tt.subject, tt.ttl, tok)
			}
		})
	}
}

func TestNewIssuerErrors(t *testing.T) {
	tests := []struct {
		name     string
		iss, aud string
		opts     []auth.IssuerOption
	}{
		{"empty issuer", "", "a", nil},
		{"empty audience", "i", "", nil},
		{"zero ttl", "i", "a", []auth.IssuerOption{auth.WithTTL(0)}},
		{"ttl above max", "i", "a", []auth.IssuerOption{auth.WithTTL(2 * time.Hour)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := auth.NewIssuer(tt.iss, tt.aud, tt.opts...); err == nil {
				t.Errorf("NewIssuer(%q, %q) succeeded, want an error", tt.iss, tt.aud)
			}
		})
	}
}

// RFC 8037 appendix A.3: the thumbprint of the example Ed25519 key.
func TestJWKThumbprintRFC8037(t *testing.T) {
	seed, err := base64.RawURLEncoding.DecodeString("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.pem")
	writeKeyFile(t, path, ed25519.NewKeyFromSeed(seed))
	i, err := auth.NewIssuer("i", "a", auth.WithKeyFile(path))
	if err != nil {
		t.Fatal(err)
	}
	want := []auth.JWK{{
		Kty: "OKP", Crv: "Ed25519",
		X:   "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
		Kid: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
		Alg: "EdDSA", Use: "sig",
	}}
	if diff := cmp.Diff(want, i.JWKS()); diff != "" {
		t.Errorf("JWKS (-want +got):\n%s", diff)
	}
	js, err := json.Marshal(want[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, wantJSON := string(js), `{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k","alg":"EdDSA","use":"sig"}`; got != wantJSON {
		t.Errorf("JWK JSON = %s, want %s", got, wantJSON)
	}
}

// writeKeyFile writes keys as header-less PKCS#8 PEM blocks, as openssl
// genpkey does.
func writeKeyFile(t testing.TB, path string, keys ...ed25519.PrivateKey) {
	t.Helper()
	var out []byte
	for _, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func kids(jwks []auth.JWK) []string {
	out := make([]string, len(jwks))
	for i, k := range jwks {
		out[i] = k.Kid
	}
	return out
}

func TestRotateKeepsOldKeysUntilTheirTokensAreDead(t *testing.T) {
	c := newClock()
	i := newIssuer(t, c, auth.DefaultIssuer, auth.DefaultAudience, 0, auth.WithMaxTTL(time.Hour))
	first := currentKid(t, i)
	v, err := auth.NewVerifier(i, auth.DefaultIssuer, auth.DefaultAudience, auth.WithKeyMaxAge(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	auth.SetVerifierClock(v, c.Now)
	oldTok, _ := issue(t, i, "user-1")

	if err := i.Rotate(); err != nil {
		t.Fatal(err)
	}
	second := currentKid(t, i)
	if second == first {
		t.Fatal("Rotate kept the signing key")
	}
	if got, want := kids(i.JWKS()), []string{second, first}; !cmp.Equal(got, want) {
		t.Errorf("JWKS kids after Rotate = %v, want %v (newest first)", got, want)
	}
	newTok, claims := issue(t, i, "user-2")
	if claims.KeyID != second {
		t.Errorf("token after Rotate signed by %s, want %s", claims.KeyID, second)
	}
	for _, tok := range []string{oldTok, newTok} {
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Errorf("Verify after Rotate: %v", err)
		}
	}

	c.Advance(time.Hour) // max ttl: the old key may still have live tokens
	if got := kids(i.JWKS()); len(got) != 2 {
		t.Errorf("JWKS kids an hour after Rotate = %v, want both keys", got)
	}
	c.Advance(2 * time.Minute) // beyond max ttl plus the margin
	if got, want := kids(i.JWKS()), []string{second}; !cmp.Equal(got, want) {
		t.Errorf("JWKS kids after retention = %v, want %v", got, want)
	}
	if err := i.Rotate(); err != nil {
		t.Fatal(err)
	}
	if got := kids(i.JWKS()); len(got) != 2 || got[1] != second {
		t.Errorf("JWKS kids after second Rotate = %v, want [new %s]", got, second)
	}
}

func TestKeyFileSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "..", "keys.pem")
	c := newClock()
	c.Set(time.Now()) // the restarted issuer and the verifier run on real time
	i1 := newIssuer(t, c, "i", "a", 0, auth.WithKeyFile(path))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("key file not created: %v", err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode = %v, want 0600", mode)
	}
	if err := i1.Rotate(); err != nil {
		t.Fatal(err)
	}
	tok, _ := issue(t, i1, "user-1")

	i2, err := auth.NewIssuer("i", "a", auth.WithKeyFile(path))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(i1.JWKS(), i2.JWKS()); diff != "" {
		t.Errorf("JWKS after restart (-before +after):\n%s", diff)
	}
	v, err := auth.NewVerifier(i2, "i", "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Errorf("token from before the restart: %v", err)
	}
	_, claims := issue(t, i2, "user-2")
	if got, want := claims.KeyID, currentKid(t, i1); got != want {
		t.Errorf("restarted issuer signs with %s, want %s", got, want)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "Retired:"); n != 1 {
		t.Errorf("key file has %d Retired headers, want 1:\n%s", n, data)
	}
}

func TestKeyFileFromOpenSSL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.pem")
	old, cur := newKey(t), newKey(t)
	writeKeyFile(t, path, old, cur)
	i, err := auth.NewIssuer("i", "a", auth.WithKeyFile(path))
	if err != nil {
		t.Fatal(err)
	}
	jwks := i.JWKS()
	if len(jwks) != 2 {
		t.Fatalf("JWKS has %d keys, want 2", len(jwks))
	}
	if got, want := jwks[0].X, base64.RawURLEncoding.EncodeToString(cur.Public().(ed25519.PublicKey)); got != want {
		t.Errorf("signing key x = %s, want the last key of the file %s", got, want)
	}
}

func TestKeyFileErrors(t *testing.T) {
	ecKey := "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\nOF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G\n-----END PRIVATE KEY-----\n"
	tests := []struct {
		name, data string
	}{
		{"empty", ""},
		{"not PEM", "hello"},
		{"certificate block", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
		{"not PKCS#8", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
		{"not Ed25519", ecKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.pem")
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := auth.NewIssuer("i", "a", auth.WithKeyFile(path)); err == nil {
				t.Errorf("NewIssuer with key file %q succeeded, want an error", tt.data)
			}
			data, err := os.ReadFile(path)
			if err != nil || string(data) != tt.data {
				t.Errorf("key file changed to %q (%v), want it left alone", data, err)
			}
		})
	}
}

func TestRotateFailsCleanlyWhenTheFileCannotBeWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.pem")
	i := newIssuer(t, newClock(), "i", "a", 0, auth.WithKeyFile(path))
	before := i.JWKS()
	// A non-empty directory where the file was: renaming over it fails,
	// even for root.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := i.Rotate(); err == nil {
		t.Fatal("Rotate succeeded though the key file cannot be replaced")
	}
	if diff := cmp.Diff(before, i.JWKS()); diff != "" {
		t.Errorf("JWKS changed by a failed Rotate (-before +after):\n%s", diff)
	}
	tmp, err := filepath.Glob(filepath.Join(filepath.Dir(path), ".keys.pem.*"))
	if err != nil || len(tmp) != 0 {
		t.Errorf("temporary files left behind: %v (%v)", tmp, err)
	}
}
