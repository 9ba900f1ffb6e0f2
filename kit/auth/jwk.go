package auth

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// Values of the JWK fields for an Ed25519 signing key (RFC 8037).
const (
	KeyTypeOKP      = "OKP"
	CurveEd25519    = "Ed25519"
	AlgorithmEdDSA  = "EdDSA"
	KeyUseSignature = "sig"
)

// accessTokenType is the typ header of access tokens (RFC 9068).
const accessTokenType = "at+jwt"

// thumbprintPrefix opens the RFC 7638 thumbprint input of an Ed25519 key.
const thumbprintPrefix = `{"crv":"Ed25519","kty":"OKP","x":"`

// JWK is one public key in JSON Web Key form (RFC 7517, RFC 8037 for
// Ed25519). It marshals to the standard JSON, so a JWKS endpoint can serve
// a []JWK inside {"keys": ...} as it is.
type JWK struct {
	// Kty is the key type: "OKP".
	Kty string `json:"kty"`
	// Crv is the curve: "Ed25519".
	Crv string `json:"crv"`
	// X is the public key, base64url without padding.
	X string `json:"x"`
	// Kid is the key id, the "kid" header of the tokens the key signed.
	Kid string `json:"kid"`
	// Alg is the algorithm: "EdDSA".
	Alg string `json:"alg,omitempty"`
	// Use is the intended use: "sig".
	Use string `json:"use,omitempty"`
}

// publicJWK returns the JWK of pub, with kid its RFC 7638 thumbprint.
func publicJWK(pub ed25519.PublicKey) JWK {
	x := base64.RawURLEncoding.EncodeToString(pub)
	return JWK{Kty: KeyTypeOKP, Crv: CurveEd25519, X: x, Kid: thumbprint(x), Alg: AlgorithmEdDSA, Use: KeyUseSignature}
}

// thumbprint is the RFC 7638 JWK thumbprint (SHA-256, base64url) of the
// Ed25519 key whose base64url public key is x: the hash of the required
// members in lexicographic order, without whitespace.
func thumbprint(x string) string {
	sum := sha256.Sum256([]byte(thumbprintPrefix + x + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

var errNotEd25519 = errors.New("not an Ed25519 signing key")

// PublicKey returns the Ed25519 public key of k. It fails unless k is an
// OKP key on Ed25519 with a kid, whose alg, when set, is EdDSA and whose
// use, when set, is "sig".
func (k JWK) PublicKey() (ed25519.PublicKey, error) {
	switch {
	case k.Kty != KeyTypeOKP || k.Crv != CurveEd25519:
		return nil, fmt.Errorf("jwk %q: %w (kty %q, crv %q)", k.Kid, errNotEd25519, k.Kty, k.Crv)
	case k.Alg != "" && k.Alg != AlgorithmEdDSA:
		return nil, fmt.Errorf("jwk %q: %w (alg %q)", k.Kid, errNotEd25519, k.Alg)
	case k.Use != "" && k.Use != KeyUseSignature:
		return nil, fmt.Errorf("jwk %q: %w (use %q)", k.Kid, errNotEd25519, k.Use)
	case k.Kid == "":
		return nil, errors.New("jwk without kid")
	}
	pub, err := base64.RawURLEncoding.Strict().DecodeString(k.X)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("jwk %q: x is not a base64url Ed25519 public key", k.Kid)
	}
	return ed25519.PublicKey(pub), nil
}
