package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults shared by issuers and verifiers.
const (
	// DefaultIssuer is the iss of Switchboard's access tokens: the SPIFFE
	// id of the identity service.
	DefaultIssuer = "spiffe://switchboard.local/identity"
	// DefaultAudience is the aud of Switchboard's access tokens.
	DefaultAudience = "switchboard"
	// DefaultTTL is how long an access token lives unless Issue is told
	// otherwise.
	DefaultTTL = 15 * time.Minute
	// DefaultMaxTTL bounds the ttl Issue accepts.
	DefaultMaxTTL = time.Hour
)

// retentionMargin is how long past the longest token lifetime a retired key
// stays published: it covers verifiers' leeway and clock skew.
const retentionMargin = time.Minute

// Claims are the claims of an issued access token.
type Claims struct {
	// Issuer is iss.
	Issuer string
	// Subject is sub: the user id.
	Subject string
	// Audience is aud.
	Audience string
	// ExpiresAt is exp.
	ExpiresAt time.Time
	// IssuedAt is iat; NotBefore (nbf) is the same instant.
	IssuedAt time.Time
	// NotBefore is nbf.
	NotBefore time.Time
	// ID is jti: 128 random bits, base64url.
	ID string
	// Roles is the roles claim.
	Roles []string
	// KeyID is the kid header: the key that signed the token.
	KeyID string
}

// IssuerOption configures an Issuer.
type IssuerOption func(*issuerOptions)

type issuerOptions struct {
	ttl     time.Duration
	maxTTL  time.Duration
	keyFile string
}

// WithTTL sets the lifetime of tokens issued with ttl 0 (default 15
// minutes).
func WithTTL(d time.Duration) IssuerOption { return func(o *issuerOptions) { o.ttl = d } }

// WithMaxTTL bounds the lifetime Issue accepts (default 1 hour). A key
// retired by Rotate stays in the key set for this long plus a minute, so
// that every token it signed can still be verified.
func WithMaxTTL(d time.Duration) IssuerOption { return func(o *issuerOptions) { o.maxTTL = d } }

// WithKeyFile keeps the signing keys in the PEM file at path, so that a
// restart keeps them: the file holds one PKCS#8 "PRIVATE KEY" block per
// key (what `openssl genpkey -algorithm ed25519` writes), the current key
// last; retired keys carry a "Retired" header with the RFC 3339 time they
// were retired at. NewIssuer loads the file, or creates it with a new key
// (mode 0600) when it does not exist; Rotate rewrites it atomically. One
// Issuer should own a file: replicas share the file read-only, or each
// have their own keys.
func WithKeyFile(path string) IssuerOption { return func(o *issuerOptions) { o.keyFile = path } }

// signingKey is one Ed25519 key of an Issuer.
type signingKey struct {
	kid     string
	private ed25519.PrivateKey
	jwk     JWK
	retired time.Time // zero for the current key
}

// Issuer issues access tokens and publishes the public keys that verify
// them. It is safe for concurrent use. It implements KeySource, so a
// Verifier in the same process can use it directly.
type Issuer struct {
	issuer   string
	audience string
	opts     issuerOptions
	now      func() time.Time

	mu   sync.RWMutex
	keys []signingKey // oldest first; the last one signs
}

var _ KeySource = (*Issuer)(nil)

// NewIssuer returns an Issuer of tokens with the given iss and aud claims
// (typically DefaultIssuer and DefaultAudience), with a new signing key or
// the keys of WithKeyFile.
func NewIssuer(issuer, audience string, opts ...IssuerOption) (*Issuer, error) {
	if issuer == "" || audience == "" {
		return nil, errors.New("auth: issuer and audience must not be empty")
	}
	o := issuerOptions{ttl: DefaultTTL, maxTTL: DefaultMaxTTL}
	for _, opt := range opts {
		opt(&o)
	}
	if o.ttl <= 0 || o.maxTTL < o.ttl {
		return nil, fmt.Errorf("auth: ttl %v must be positive and at most the max ttl %v", o.ttl, o.maxTTL)
	}
	i := &Issuer{issuer: issuer, audience: audience, opts: o, now: time.Now}
	if o.keyFile != "" {
		keys, err := loadKeyFile(o.keyFile, i.now())
		if err != nil {
			return nil, fmt.Errorf("auth: key file: %w", err)
		}
		if keys != nil {
			i.keys = i.prune(keys, i.now())
			return i, nil
		}
	}
	key, err := newSigningKey()
	if err != nil {
		return nil, err
	}
	if o.keyFile != "" {
		if err := saveKeyFile(o.keyFile, []signingKey{key}); err != nil {
			return nil, fmt.Errorf("auth: key file: %w", err)
		}
	}
	i.keys = []signingKey{key}
	return i, nil
}

func newSigningKey() (signingKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return signingKey{}, fmt.Errorf("auth: generate key: %w", err)
	}
	return keyFromPrivate(priv), nil
}

func keyFromPrivate(priv ed25519.PrivateKey) signingKey {
	jwk := publicJWK(priv.Public().(ed25519.PublicKey))
	return signingKey{kid: jwk.Kid, private: priv, jwk: jwk}
}

// tokenClaims is the JSON payload of an access token.
type tokenClaims struct {
	Issuer    string           `json:"iss,omitempty"`
	Subject   string           `json:"sub,omitempty"`
	Audience  audience         `json:"aud,omitempty"`
	ExpiresAt *jwt.NumericDate `json:"exp,omitempty"`
	NotBefore *jwt.NumericDate `json:"nbf,omitempty"`
	IssuedAt  *jwt.NumericDate `json:"iat,omitempty"`
	ID        string           `json:"jti,omitempty"`
	Roles     []string         `json:"roles"`
}

// GetExpirationTime implements jwt.Claims.
func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt, nil }

// GetIssuedAt implements jwt.Claims.
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error) { return c.IssuedAt, nil }

// GetNotBefore implements jwt.Claims.
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error) { return c.NotBefore, nil }

// GetIssuer implements jwt.Claims.
func (c *tokenClaims) GetIssuer() (string, error) { return c.Issuer, nil }

// GetSubject implements jwt.Claims.
func (c *tokenClaims) GetSubject() (string, error) { return c.Subject, nil }

// GetAudience implements jwt.Claims.
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error) {
	return jwt.ClaimStrings(c.Audience), nil
}

// audience is the aud claim: a string or an array of strings when read, a
// string when it holds exactly one.
type audience jwt.ClaimStrings

// MarshalJSON implements json.Marshaler.
func (a audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return jwt.ClaimStrings(a).MarshalJSON()
}

// UnmarshalJSON implements json.Unmarshaler.
func (a *audience) UnmarshalJSON(b []byte) error {
	return (*jwt.ClaimStrings)(a).UnmarshalJSON(b)
}

func (a audience) contains(s string) bool { return slices.Contains(a, s) }

// Issue signs an access token for the user subject with roles, valid from
// now for ttl (0 means the issuer's default, WithTTL). It returns the token
// and its claims. ttl above the issuer's maximum (WithMaxTTL) is an error.
func (i *Issuer) Issue(ctx context.Context, subject string, roles []string, ttl time.Duration) (string, Claims, error) {
	if err := ctx.Err(); err != nil {
		return "", Claims{}, err
	}
	if subject == "" {
		return "", Claims{}, errors.New("auth: issue: empty subject")
	}
	if ttl == 0 {
		ttl = i.opts.ttl
	}
	if ttl < 0 || ttl > i.opts.maxTTL {
		return "", Claims{}, fmt.Errorf("auth: issue: ttl %v outside (0, %v]", ttl, i.opts.maxTTL)
	}
	var id [16]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	now := i.now().Truncate(time.Second)
	c := Claims{
		Issuer:    i.issuer,
		Subject:   subject,
		Audience:  i.audience,
		IssuedAt:  now,
		NotBefore: now,
		ExpiresAt: now.Add(ttl),
		ID:        base64.RawURLEncoding.EncodeToString(id[:]),
		Roles:     append([]string{}, roles...),
	}

	i.mu.RLock()
	key := i.keys[len(i.keys)-1]
	i.mu.RUnlock()
	c.KeyID = key.kid

	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, &tokenClaims{
		Issuer:    c.Issuer,
		Subject:   c.Subject,
		Audience:  audience{c.Audience},
		ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
		NotBefore: jwt.NewNumericDate(c.NotBefore),
		IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
		ID:        c.ID,
		Roles:     c.Roles,
	})
	tok.Header["kid"] = key.kid
	tok.Header["typ"] = accessTokenType
	signed, err := tok.SignedString(key.private)
	if err != nil {
		return "", Claims{}, fmt.Errorf("auth: sign: %w", err)
	}
	return signed, c, nil
}

// Rotate makes a new key the signing key. The previous keys stay in the key
// set until no token they signed can still be live (the max ttl plus a
// minute after they were retired), then Rotate drops them. With WithKeyFile
// the file is rewritten first; if that fails, nothing changes.
func (i *Issuer) Rotate() error {
	key, err := newSigningKey()
	if err != nil {
		return err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	now := i.now()
	keys := slices.Clone(i.keys)
	keys[len(keys)-1].retired = now
	keys = i.prune(append(keys, key), now)
	if i.opts.keyFile != "" {
		if err := saveKeyFile(i.opts.keyFile, keys); err != nil {
			return fmt.Errorf("auth: rotate: %w", err)
		}
	}
	i.keys = keys
	return nil
}

// prune drops the retired keys that can no longer have live tokens.
func (i *Issuer) prune(keys []signingKey, now time.Time) []signingKey {
	return slices.DeleteFunc(keys, func(k signingKey) bool { return !i.published(k, now) })
}

// published reports whether k belongs in the key set at now.
func (i *Issuer) published(k signingKey, now time.Time) bool {
	return k.retired.IsZero() || now.Before(k.retired.Add(i.opts.maxTTL+retentionMargin))
}

// JWKS returns the public keys that verify the tokens this issuer signed and
// that may still be live, newest (the signing key) first.
func (i *Issuer) JWKS() []JWK {
	now := i.now()
	i.mu.RLock()
	defer i.mu.RUnlock()
	out := make([]JWK, 0, len(i.keys))
	for _, k := range slices.Backward(i.keys) {
		if i.published(k, now) {
			out = append(out, k.jwk)
		}
	}
	return out
}

// Keys implements KeySource: it returns JWKS().
func (i *Issuer) Keys(context.Context) ([]JWK, error) { return i.JWKS(), nil }
