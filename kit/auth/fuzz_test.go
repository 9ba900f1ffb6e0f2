package auth_test

import (
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
)

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, never
// accept a token the issuer did not sign, and never echo the input.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	kid := currentKid(f, fx.issuer)
	valid, _ := issue(f, fx.issuer, "user-1", "customer")
	parts := strings.Split(valid, ".")
	f.Add(valid)
	f.Add("")
	f.Add(".")
	f.Add("..")
	f.Add("a.b.c")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(parts[0] + ".e30." + parts[2])
	f.Add(unsignedToken(f, map[string]any{"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}, map[string]any{"exp": "x", "aud": 5, "roles": "r"}, nil))
	f.Add(unsignedToken(f, map[string]any{"alg": "EdDSA", "kid": []int{1}, "typ": "at+jwt", "crit": 1}, nil, []byte{1}))
	f.Add(craft(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": kid}, claimsAt(fx.clock.Now())))
	f.Add(craft(f, jwt.SigningMethodEdDSA, newKey(f), map[string]any{"kid": kid}, claimsAt(fx.clock.Now())))
	f.Fuzz(func(t *testing.T, token string) {
		u, err := fx.verifier.Verify(t.Context(), token)
		if err == nil {
			if token != valid {
				t.Fatalf("Verify accepted a token the issuer did not sign: %q -> %+v", token, u)
			}
			return
		}
		st, _ := grpcstatus.FromError(err)
		if c := st.Code(); c != codes.Unauthenticated {
			t.Fatalf("Verify(%q) code = %v, want Unauthenticated", token, c)
		}
		if len(token) > 8 && strings.Contains(st.Message(), token) {
			t.Fatalf("Verify(%q) error echoes the token: %v", token, err)
		}
	})
}
