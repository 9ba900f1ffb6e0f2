package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	"github.com/switchboard-rpc/switchboard/internal/sqldb"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

const password = "correct horse battery"

// TestFlow drives register, login, refresh and revoke through real gRPC,
// on both engines, and checks every token with a Verifier whose keys come
// from GetJwks.
func TestFlow(t *testing.T) {
	onBoth(t, func(t *testing.T, db *sqldb.DB) {
		e := newEnv(t, db, nil)
		user := e.register(t, "  Flow.User@Example.COM ", password)
		if user.GetEmail() != "Flow.User@example.com" || !cmp.Equal(user.GetRoles(), []string{"customer"}) ||
			user.GetDisplayName() != "Test User" || user.GetCreateTime().AsTime().IsZero() {
			t.Errorf("Register returned %v, want the normalised address, role customer, a create time", user)
		}
		if _, err := uuid.Parse(user.GetUserId()); err != nil {
			t.Errorf("user id %q is not a UUID", user.GetUserId())
		}

		login := e.login(t, "flow.user@EXAMPLE.com", password) // any case logs in
		if login.GetTokenType() != "Bearer" || login.GetExpiresIn() != int64(auth.DefaultTTL/time.Second) ||
			len(login.GetRefreshToken()) != refreshTokenLen {
			t.Errorf("Login = type %q, expires_in %d, refresh token of %d characters; want Bearer, %d, %d",
				login.GetTokenType(), login.GetExpiresIn(), len(login.GetRefreshToken()), int64(auth.DefaultTTL/time.Second), refreshTokenLen)
		}
		if diff := protoDiff(user, login.GetUser()); diff != "" {
			t.Errorf("Login user (-want +got):\n%s", diff)
		}
		verified, err := e.verifier.Verify(t.Context(), login.GetAccessToken())
		if err != nil {
			t.Fatalf("Verify(access token from Login) = %v", err)
		}
		if verified.ID != user.GetUserId() || !cmp.Equal(verified.Roles, []string{"customer"}) {
			t.Errorf("verified user = %s %v, want %s [customer]", verified.ID, verified.Roles, user.GetUserId())
		}

		// The user reads their own record with the token from Login.
		got, err := e.client.GetUser(caller(t, "gateway", login.GetAccessToken()), &identityv1.GetUserRequest{UserId: user.GetUserId()})
		if err != nil {
			t.Fatal(err)
		}
		if diff := protoDiff(user, got.GetUser()); diff != "" {
			t.Errorf("GetUser (-want +got):\n%s", diff)
		}

		refreshed, err := e.client.Refresh(gw(t), &identityv1.RefreshRequest{RefreshToken: login.GetRefreshToken()})
		if err != nil {
			t.Fatal(err)
		}
		if refreshed.GetRefreshToken() == login.GetRefreshToken() || refreshed.GetTokenType() != "Bearer" || refreshed.GetExpiresIn() <= 0 {
			t.Errorf("Refresh = %v, want a new refresh token, Bearer, a positive expires_in", refreshed)
		}
		if v, err := e.verifier.Verify(t.Context(), refreshed.GetAccessToken()); err != nil || v.ID != user.GetUserId() {
			t.Errorf("Verify(refreshed access token) = %v, %v", v, err)
		}

		// Revoking the access token: a Verifier sharing the store refuses it.
		if _, err := e.client.RevokeToken(gw(t), &identityv1.RevokeTokenRequest{Token: refreshed.GetAccessToken()}); err != nil {
			t.Fatal(err)
		}
		_, err = e.verifier.Verify(t.Context(), refreshed.GetAccessToken())
		wantStatus(t, "Verify(revoked access token)", err, codes.Unauthenticated, auth.ReasonTokenRevoked)
		_, err = e.client.GetUser(caller(t, "gateway", refreshed.GetAccessToken()), &identityv1.GetUserRequest{UserId: user.GetUserId()})
		wantStatus(t, "GetUser with the revoked token", err, codes.Unauthenticated, auth.ReasonTokenRevoked)
		if _, err := e.verifier.Verify(t.Context(), login.GetAccessToken()); err != nil {
			t.Errorf("Verify(the other access token) = %v, want valid", err)
		}

		// Revoking the refresh token ends its family.
		if _, err := e.client.RevokeToken(gw(t), &identityv1.RevokeTokenRequest{
			Token: refreshed.GetRefreshToken(), TokenTypeHint: HintRefreshToken,
		}); err != nil {
			t.Fatal(err)
		}
		_, err = e.client.Refresh(gw(t), &identityv1.RefreshRequest{RefreshToken: refreshed.GetRefreshToken()})
		wantStatus(t, "Refresh(revoked)", err, codes.Unauthenticated, ReasonRefreshTokenRevoked)

		// RFC 7009: revoking what is not a live token succeeds, again and again.
		for _, tok := range []string{
			refreshed.GetRefreshToken(), refreshed.GetAccessToken(), "not-a-token", strings.Repeat("A", refreshTokenLen),
			"eyJhbGciOiJFZERTQSJ9.e30.c2ln",
		} {
			if _, err := e.client.RevokeToken(gw(t), &identityv1.RevokeTokenRequest{Token: tok}); err != nil {
				t.Errorf("RevokeToken(%.20q) = %v, want success", tok, err)
			}
		}
	})
}

// TestJWKSFromClient checks GetJwks against the Issuer, and that a Verifier
// over JWKSFromClient follows a key rotation.
func TestJWKSFromClient(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	src := JWKSFromClient(e.client)
	want := e.svc.Issuer().JWKS()
	got, err := src.Keys(gw(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" || len(got) != 1 {
		t.Errorf("JWKSFromClient keys (-want +got):\n%s", diff)
	}
	if got[0].Kty != auth.KeyTypeOKP || got[0].Crv != auth.CurveEd25519 || got[0].Alg != auth.AlgorithmEdDSA || got[0].Use != auth.KeyUseSignature {
		t.Errorf("key = %+v, want an OKP Ed25519 EdDSA signing key", got[0])
	}

	e.register(t, "rotate@example.com", password)
	before := e.login(t, "rotate@example.com", password)
	if _, err := e.verifier.Verify(t.Context(), before.GetAccessToken()); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Issuer().Rotate(); err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.GetJwks(caller(t, "notify", ""), &identityv1.GetJwksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := e.svc.Issuer().JWKS()
	if len(resp.GetKeys()) != 2 || resp.GetKeys()[0].GetKid() != keys[0].Kid || resp.GetKeys()[1].GetKid() != want[0].Kid {
		t.Errorf("GetJwks after Rotate = %v, want the new key then the old one", resp.GetKeys())
	}
	after := e.login(t, "rotate@example.com", password)
	for name, tok := range map[string]string{"old key": before.GetAccessToken(), "new key": after.GetAccessToken()} {
		if _, err := e.verifier.Verify(t.Context(), tok); err != nil {
			t.Errorf("Verify(token signed by the %s) = %v", name, err)
		}
	}
}

func TestRegisterDuplicateAndIdempotency(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	register := func(email, key, pw, name string) (*identityv1.User, error) {
		resp, err := e.client.Register(gw(t), &identityv1.RegisterRequest{
			Email: email, Password: pw, DisplayName: name, IdempotencyKey: key,
		})
		return resp.GetUser(), err
	}
	first, err := register("Dup@Example.com", "key-1", password, "Dee")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("same key returns the same user", func(t *testing.T) {
		for _, email := range []string{"Dup@Example.com", " dup@example.COM"} {
			got, err := register(email, "key-1", password, "Dee")
			if err != nil {
				t.Fatalf("Register(%q, same key) = %v", email, err)
			}
			if diff := protoDiff(first, got); diff != "" {
				t.Errorf("Register(%q, same key) (-want +got):\n%s", email, diff)
			}
		}
	})

	for _, tc := range []struct {
		name, email, key, pw, display string
	}{
		{"other case, no key", "DUP@example.com", "", password, "Dee"},
		{"other key", "dup@example.com", "key-2", password, "Dee"},
		{"same key, other password", "dup@example.com", "key-1", password + "!", "Dee"},
		{"same key, other name", "dup@example.com", "key-1", password, "Someone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := register(tc.email, tc.key, tc.pw, tc.display)
			wantStatus(t, "Register", err, codes.AlreadyExists, ReasonEmailTaken)
			want := &errdetails.ResourceInfo{ResourceType: ResourceType, ResourceName: "Dup@example.com", Description: "a user with this e-mail address exists"}
			if diff := protoDiff(want, status.ResourceInfo(err)); diff != "" {
				t.Errorf("ResourceInfo (-want +got):\n%s", diff)
			}
			if info := status.Info(err); info.GetDomain() != Domain {
				t.Errorf("domain = %q, want %q", info.GetDomain(), Domain)
			}
		})
	}

	t.Run("same key, other address creates a user", func(t *testing.T) {
		got, err := register("other@example.com", "key-1", password, "Dee")
		if err != nil || got.GetUserId() == first.GetUserId() {
			t.Errorf("Register(other address, key-1) = %v, %v, want a new user", got, err)
		}
	})
}

func TestRegisterConcurrentSameEmail(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	const n = 10
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		ok, already int
		others      []error
	)
	for i := range n {
		wg.Go(func() {
			_, err := e.client.Register(gw(t), &identityv1.RegisterRequest{
				Email: "race@example.com", Password: password, DisplayName: "Racer", IdempotencyKey: fmt.Sprint("k", i),
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case grpcstatus.Code(err) == codes.AlreadyExists:
				already++
			default:
				others = append(others, err)
			}
		})
	}
	wg.Wait()
	if ok != 1 || already != n-1 || len(others) > 0 {
		t.Errorf("%d concurrent Register of one address: %d ok, %d ALREADY_EXISTS, others %v; want 1 and %d", n, ok, already, others, n-1)
	}
}

// TestLoginFailuresIdentical: a wrong password and an unknown address give
// the very same status.
func TestLoginFailuresIdentical(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	e.register(t, "known@example.com", password)
	var statuses []*grpcstatus.Status
	for _, req := range []*identityv1.LoginRequest{
		{Email: "known@example.com", Password: "wrong password"},
		{Email: "unknown@example.com", Password: "wrong password"},
		{Email: "unknown@example.com", Password: password},
	} {
		_, err := e.client.Login(gw(t), req)
		wantStatus(t, "Login("+req.GetEmail()+")", err, codes.Unauthenticated, ReasonInvalidCredentials)
		statuses = append(statuses, grpcstatus.Convert(err))
	}
	for i := 1; i < len(statuses); i++ {
		if diff := protoDiff(statuses[0].Proto(), statuses[i].Proto()); diff != "" {
			t.Errorf("Login failure %d differs from the wrong-password one (-want +got):\n%s", i, diff)
		}
	}
	if msg := statuses[0].Message(); strings.Contains(msg, "known") || strings.Contains(msg, "password is") {
		t.Errorf("message %q says too much", msg)
	}
}

func TestLoginThrottle(t *testing.T) {
	e := newEnv(t, newDB(t), func(c *Config) {
		c.LoginThrottle = LoginThrottle{MaxAttempts: 5, Window: 15 * time.Minute}
	})
	e.register(t, "victim@example.com", password)
	e.register(t, "bystander@example.com", password)
	for i := range 5 {
		_, err := e.client.Login(gw(t), &identityv1.LoginRequest{Email: "victim@example.com", Password: fmt.Sprint("guess ", i)})
		wantStatus(t, fmt.Sprint("wrong login ", i+1), err, codes.Unauthenticated, ReasonInvalidCredentials)
		e.clock.Advance(time.Minute)
	}
	// Even the right password is refused now, in any case of the address.
	_, err := e.client.Login(gw(t), &identityv1.LoginRequest{Email: "VICTIM@example.com", Password: password})
	wantStatus(t, "login after 5 failures", err, codes.ResourceExhausted, ReasonLoginThrottled)
	if delay, ok := status.RetryDelay(err); !ok || delay != 10*time.Minute {
		t.Errorf("RetryDelay = %v, %v, want 10m: the 15-minute window started 5 minutes ago", delay, ok)
	}
	// Unknown addresses are throttled the same way.
	for i := range 6 {
		_, err := e.client.Login(gw(t), &identityv1.LoginRequest{Email: "ghost@example.com", Password: "nope"})
		if i == 5 {
			wantStatus(t, "sixth login of an unknown address", err, codes.ResourceExhausted, ReasonLoginThrottled)
		}
	}
	e.login(t, "bystander@example.com", password) // other accounts are not affected

	e.clock.Advance(10 * time.Minute)
	e.login(t, "victim@example.com", password)
	// A success resets the count: five more failures are allowed.
	for i := range 5 {
		_, err := e.client.Login(gw(t), &identityv1.LoginRequest{Email: "victim@example.com", Password: "wrong again"})
		wantStatus(t, fmt.Sprint("failure after reset ", i+1), err, codes.Unauthenticated, ReasonInvalidCredentials)
	}
}

// TestRefreshReuseRevokesFamily: presenting a used refresh token revokes
// the family, so the token the first use returned stops working too.
func TestRefreshReuseRevokesFamily(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	e.register(t, "reuse@example.com", password)
	login := e.login(t, "reuse@example.com", password)
	other := e.login(t, "reuse@example.com", password) // a second session
	first, err := e.client.Refresh(gw(t), &identityv1.RefreshRequest{RefreshToken: login.GetRefreshToken()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.client.Refresh(gw(t), &identityv1.RefreshRequest{RefreshToken: login.GetRefreshToken()})
	wantStatus(t, "Refresh(used token)", err, codes.Unauthenticated, ReasonRefreshTokenReused)
	if d := status.Info(err).GetDomain(); d != Domain {
		t.Errorf("domain = %q, want %q", d, Domain)
	}
	_, err = e.client.Refresh(gw(t), &identityv1.RefreshRequest{RefreshToken: first.GetRefreshToken()})
	wantStatus(t, "Refresh(newer token of the family)", err, codes.Unauthenticated, ReasonRefreshTokenRevoked)
	if _, err := e.client.Refresh(gw(t), &identityv1.RefreshRequest{RefreshToken: other.GetRefreshToken()}); err != nil {
		t.Errorf("Refresh(other session) = %v, want success", err)
	}
}

func TestRefreshConcurrent(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	e.register(t, "burst@example.com", password)
	login := e.login(t, "burst@example.com", password)
	const n = 10
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		won     []*identityv1.RefreshResponse
		refused int
		others  []error
	)
	for range n {
		wg.Go(func() {
			resp, err := e.client.Refresh(gw(t), &identityv1.RefreshRequest{RefreshToken: login.GetRefreshToken()})
			mu.Lock()
			defer mu.Unlock()
			switch r := status.Reason(err); {
			case err == nil:
				won = append(won, resp)
			case r == ReasonRefreshTokenReused || r == ReasonRefreshTokenRevoked:
				refused++
			default:
				others = append(others, err)
			}
		})
	}
	wg.Wait()
	if len(won) != 1 || refused != n-1 || len(others) > 0 {
		t.Fatalf("%d concurrent refreshes: %d succeeded, %d refused, others %v; want exactly 1", n, len(won), refused, others)
	}
	_, err := e.client.Refresh(gw(t), &identityv1.RefreshRequest{RefreshToken: won[0].GetRefreshToken()})
	wantStatus(t, "Refresh(the winner's token)", err, codes.Unauthenticated, ReasonRefreshTokenRevoked)
}

func TestRefreshErrors(t *testing.T) {
	e := newEnv(t, newDB(t), func(c *Config) { c.RefreshTokenTTL = 24 * time.Hour })
	e.register(t, "expiry@example.com", password)
	login := e.login(t, "expiry@example.com", password)
	e.clock.Advance(24 * time.Hour)
	_, err := e.client.Refresh(gw(t), &identityv1.RefreshRequest{RefreshToken: login.GetRefreshToken()})
	wantStatus(t, "Refresh(expired)", err, codes.Unauthenticated, ReasonRefreshTokenExpired)
	for _, tok := range []string{"short", strings.Repeat("A", refreshTokenLen), login.GetAccessToken()} {
		_, err := e.client.Refresh(gw(t), &identityv1.RefreshRequest{RefreshToken: tok})
		wantStatus(t, fmt.Sprintf("Refresh(%.10q)", tok), err, codes.Unauthenticated, ReasonRefreshTokenInvalid)
	}
}

func TestGetUserAccess(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	ann := e.register(t, "ann@example.com", password)
	bob := e.register(t, "bob@example.com", password)
	annToken := e.login(t, "ann@example.com", password).GetAccessToken()
	unknown := uuid.NewString()
	for _, tc := range []struct {
		name             string
		service, token   string
		userID           string
		code             codes.Code
		reason           string
		resourceNotFound bool
	}{
		{name: "user reads self", service: "gateway", token: annToken, userID: ann.GetUserId()},
		{name: "user reads self via another service", service: "inventory", token: annToken, userID: ann.GetUserId()},
		{name: "user reads another user", service: "gateway", token: annToken, userID: bob.GetUserId(),
			code: codes.PermissionDenied, reason: ReasonNotOwnUser},
		{name: "user asks for an unknown id", service: "gateway", token: annToken, userID: unknown,
			code: codes.PermissionDenied, reason: ReasonNotOwnUser},
		{name: "order service reads anyone", service: "order", userID: bob.GetUserId()},
		{name: "notify service reads anyone", service: "notify", userID: bob.GetUserId()},
		{name: "operator reads anyone", service: authz.Operator, userID: ann.GetUserId()},
		{name: "unknown id", service: "payment", userID: unknown,
			code: codes.NotFound, reason: ReasonUserNotFound, resourceNotFound: true},
		{name: "unlisted service without a user", service: "inventory", userID: bob.GetUserId(),
			code: codes.PermissionDenied, reason: authz.ReasonUserRequired},
		{name: "no calling service", userID: bob.GetUserId(),
			code: codes.PermissionDenied, reason: authz.ReasonServiceRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.client.GetUser(caller(t, tc.service, tc.token), &identityv1.GetUserRequest{UserId: tc.userID})
			if tc.code == codes.OK {
				if err != nil || resp.GetUser().GetUserId() != tc.userID {
					t.Errorf("GetUser(%s) = %v, %v, want the user", tc.userID, resp, err)
				}
				return
			}
			wantStatus(t, "GetUser", err, tc.code, tc.reason)
			if tc.resourceNotFound {
				want := &errdetails.ResourceInfo{ResourceType: ResourceType, ResourceName: tc.userID}
				if diff := protoDiff(want, status.ResourceInfo(err)); diff != "" {
					t.Errorf("ResourceInfo (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	e.register(t, "policy@example.com", password)
	call := func(ctx context.Context, method string) error {
		var err error
		switch method {
		case "Register":
			_, err = e.client.Register(ctx, &identityv1.RegisterRequest{Email: "p2@example.com", Password: password, DisplayName: "P"})
		case "Login":
			_, err = e.client.Login(ctx, &identityv1.LoginRequest{Email: "policy@example.com", Password: password})
		case "Refresh":
			_, err = e.client.Refresh(ctx, &identityv1.RefreshRequest{RefreshToken: "x"})
		case "RevokeToken":
			_, err = e.client.RevokeToken(ctx, &identityv1.RevokeTokenRequest{Token: "x"})
		case "GetJwks":
			_, err = e.client.GetJwks(ctx, &identityv1.GetJwksRequest{})
		}
		return err
	}
	for _, tc := range []struct {
		method, service string
		allowed         bool
	}{
		{"Register", "order", false},
		{"Login", "inventory", false},
		{"Refresh", "payment", false},
		{"RevokeToken", "notify", false},
		{"Login", authz.Operator, true},
		{"Login", "gateway", true},
		{"GetJwks", "inventory", true},
		{"GetJwks", "", false},
		{"Register", "", false},
	} {
		err := call(caller(t, tc.service, ""), tc.method)
		denied := grpcstatus.Code(err) == codes.PermissionDenied
		if denied == tc.allowed {
			t.Errorf("%s as %q: %v, want allowed %v", tc.method, tc.service, err, tc.allowed)
		}
	}
}

func TestValidation(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name  string
		call  func(ctx context.Context) error
		field string
	}{
		{"register without email", func(ctx context.Context) error {
			_, err := e.client.Register(ctx, &identityv1.RegisterRequest{Password: password, DisplayName: "X"})
			return err
		}, "email"},
		{"register bad email", func(ctx context.Context) error {
			_, err := e.client.Register(ctx, &identityv1.RegisterRequest{Email: "Ann <a@b.c>", Password: password, DisplayName: "X"})
			return err
		}, "email"},
		{"register long email", func(ctx context.Context) error {
			_, err := e.client.Register(ctx, &identityv1.RegisterRequest{Email: long(250) + "@example.com", Password: password, DisplayName: "X"})
			return err
		}, "email"},
		{"register short password", func(ctx context.Context) error {
			_, err := e.client.Register(ctx, &identityv1.RegisterRequest{Email: "a@b.c", Password: "elevenchars", DisplayName: "X"})
			return err
		}, "password"},
		{"register long password", func(ctx context.Context) error {
			_, err := e.client.Register(ctx, &identityv1.RegisterRequest{Email: "a@b.c", Password: long(129), DisplayName: "X"})
			return err
		}, "password"},
		{"register no display name", func(ctx context.Context) error {
			_, err := e.client.Register(ctx, &identityv1.RegisterRequest{Email: "a@b.c", Password: password})
			return err
		}, "display_name"},
		{"register blank display name", func(ctx context.Context) error {
			_, err := e.client.Register(ctx, &identityv1.RegisterRequest{Email: "a@b.c", Password: password, DisplayName: "   "})
			return err
		}, "display_name"},
		{"register control characters", func(ctx context.Context) error {
			_, err := e.client.Register(ctx, &identityv1.RegisterRequest{Email: "a@b.c", Password: password, DisplayName: "Ann\r\nBcc: x"})
			return err
		}, "display_name"},
		{"register long display name", func(ctx context.Context) error {
			_, err := e.client.Register(ctx, &identityv1.RegisterRequest{Email: "a@b.c", Password: password, DisplayName: long(101)})
			return err
		}, "display_name"},
		{"register long key", func(ctx context.Context) error {
			_, err := e.client.Register(ctx, &identityv1.RegisterRequest{Email: "a@b.c", Password: password, DisplayName: "X", IdempotencyKey: long(129)})
			return err
		}, "idempotency_key"},
		{"login without password", func(ctx context.Context) error {
			_, err := e.client.Login(ctx, &identityv1.LoginRequest{Email: "a@b.c"})
			return err
		}, "password"},
		{"login bad email", func(ctx context.Context) error {
			_, err := e.client.Login(ctx, &identityv1.LoginRequest{Email: "nope", Password: password})
			return err
		}, "email"},
		{"refresh empty", func(ctx context.Context) error {
			_, err := e.client.Refresh(ctx, &identityv1.RefreshRequest{})
			return err
		}, "refresh_token"},
		{"refresh too long", func(ctx context.Context) error {
			_, err := e.client.Refresh(ctx, &identityv1.RefreshRequest{RefreshToken: long(MaxTokenLen + 1)})
			return err
		}, "refresh_token"},
		{"revoke empty", func(ctx context.Context) error {
			_, err := e.client.RevokeToken(ctx, &identityv1.RevokeTokenRequest{})
			return err
		}, "token"},
		{"revoke bad hint", func(ctx context.Context) error {
			_, err := e.client.RevokeToken(ctx, &identityv1.RevokeTokenRequest{Token: "x", TokenTypeHint: "id_token"})
			return err
		}, "token_type_hint"},
		{"get user bad id", func(ctx context.Context) error {
			_, err := e.client.GetUser(ctx, &identityv1.GetUserRequest{UserId: "42"})
			return err
		}, "user_id"},
		{"get user no id", func(ctx context.Context) error {
			_, err := e.client.GetUser(ctx, &identityv1.GetUserRequest{})
			return err
		}, "user_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(caller(t, "operator", ""))
			wantStatus(t, tc.name, err, codes.InvalidArgument, validate.Reason)
			var fields []string
			for _, v := range status.BadRequest(err).GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
			if !cmp.Equal(fields, []string{tc.field}) {
				t.Errorf("violations on %v, want exactly %s", fields, tc.field)
			}
		})
	}
}

// TestGetUserCache checks that GetUser serves from the cache and that a
// change drops the cached user, with both caches.
func TestGetUserCache(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cache func(t *testing.T) UserCache
	}{
		{"lru", func(*testing.T) UserCache { return NewLRUCache(100, time.Hour) }},
		{"redis", func(t *testing.T) UserCache {
			c, prefix := testRedis(t)
			return NewRedisCache(c, prefix, time.Hour)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := tc.cache(t)
			e := newEnv(t, newDB(t), func(c *Config) { c.Cache = cache })
			u := e.register(t, "cached@example.com", password)
			get := func() *identityv1.User {
				t.Helper()
				resp, err := e.client.GetUser(caller(t, "order", ""), &identityv1.GetUserRequest{UserId: u.GetUserId()})
				if err != nil {
					t.Fatal(err)
				}
				return resp.GetUser()
			}
			if diff := protoDiff(u, get()); diff != "" {
				t.Fatalf("GetUser (-want +got):\n%s", diff)
			}
			if _, ok, err := cache.Get(t.Context(), u.GetUserId()); !ok || err != nil {
				t.Fatalf("cache.Get after GetUser = %v, %v, want cached", ok, err)
			}
			// Change the row behind the service's back: the cache still answers.
			if _, err := e.db.ExecContext(t.Context(), `UPDATE users SET display_name = 'Renamed' WHERE user_id = $1`, u.GetUserId()); err != nil {
				t.Fatal(err)
			}
			if got := get().GetDisplayName(); got != "Test User" {
				t.Errorf("display name = %q, want the cached %q", got, "Test User")
			}
			// A change through the service invalidates it.
			if _, err := e.svc.SetRoles(t.Context(), u.GetUserId(), []string{"customer", "admin"}); err != nil {
				t.Fatal(err)
			}
			got := get()
			if got.GetDisplayName() != "Renamed" || !cmp.Equal(got.GetRoles(), []string{"customer", "admin"}) {
				t.Errorf("after SetRoles GetUser = %v, want the fresh row", got)
			}
			// The roles reach the next access token.
			login := e.login(t, "cached@example.com", password)
			if v, err := e.verifier.Verify(t.Context(), login.GetAccessToken()); err != nil || !v.HasRole("admin") {
				t.Errorf("access token after SetRoles: %v, %v, want role admin", v, err)
			}
		})
	}
}

func TestSetRolesErrors(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	u := e.register(t, "roles@example.com", password)
	for _, tc := range []struct {
		name   string
		id     string
		roles  []string
		wantIs error
		code   codes.Code
	}{
		{"unknown user", uuid.NewString(), nil, ErrUserNotFound, codes.OK},
		{"bad id", "x", nil, nil, codes.InvalidArgument},
		{"empty role", u.GetUserId(), []string{""}, nil, codes.InvalidArgument},
		{"too many roles", u.GetUserId(), make([]string, MaxRoles+1), nil, codes.InvalidArgument},
	} {
		_, err := e.svc.SetRoles(t.Context(), tc.id, tc.roles)
		if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
			t.Errorf("SetRoles(%s) = %v, want %v", tc.name, err, tc.wantIs)
		}
		if tc.code != codes.OK && grpcstatus.Code(err) != tc.code {
			t.Errorf("SetRoles(%s) = %v, want %v", tc.name, err, tc.code)
		}
	}
}

// TestRehashOnLogin: a hash made with other parameters is replaced, with
// the current ones, by the next successful login.
func TestRehashOnLogin(t *testing.T) {
	db := newDB(t)
	e := newEnv(t, db, nil)
	u := e.register(t, "rehash@example.com", password)
	current := testArgon2Params
	current.Time, current.SaltLen = 2, 24
	e2 := newEnv(t, db, func(c *Config) { c.Argon2 = current })
	e2.login(t, "rehash@example.com", password)
	acc, err := e2.svc.store.AccountByEmail(t.Context(), "rehash@example.com")
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHash(acc.PasswordHash)
	if err != nil || h.params != current {
		t.Errorf("hash after login has params %+v (%v), want %+v", h.params, err, current)
	}
	e2.login(t, "rehash@example.com", password) // the new hash verifies
	if acc.ID != u.GetUserId() {
		t.Errorf("account %s, want %s", acc.ID, u.GetUserId())
	}
}

func TestOpenConfig(t *testing.T) {
	db := newDB(t)
	issuer, err := auth.NewIssuer(auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"issuer and key file", Config{Issuer: issuer, KeyFile: "keys.pem"}},
		{"negative ttl", Config{RefreshTokenTTL: -time.Second}},
		{"ttl too long", Config{RefreshTokenTTL: MaxRefreshTokenTTL + time.Hour}},
		{"access ttl above the issuer's max", Config{Issuer: issuer, AccessTokenTTL: 2 * time.Hour}},
		{"too many attempts", Config{LoginThrottle: LoginThrottle{MaxAttempts: MaxLoginAttempts + 1}}},
		{"window too long", Config{LoginThrottle: LoginThrottle{Window: 48 * time.Hour}}},
		{"weak argon2", Config{Argon2: Argon2Params{Time: 1, MemoryKiB: 1024, Threads: 1, SaltLen: 16, KeyLen: 32}}},
		{"short salt", Config{Argon2: Argon2Params{Time: 1, MemoryKiB: MinArgon2MemoryKiB, Threads: 1, SaltLen: 4, KeyLen: 32}}},
		{"too many hashes", Config{MaxConcurrentHashes: MaxConcurrentHashes + 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.Context(), db, tc.cfg, nil)
			if err == nil {
				_ = s.Close()
				t.Errorf("Open(%+v) succeeded, want an error", tc.cfg)
			}
		})
	}

	t.Run("key file keeps keys across restarts", func(t *testing.T) {
		path := t.TempDir() + "/keys.pem"
		cfg := Config{KeyFile: path, InsecureTestHashing: true, AccessTokenTTL: 5 * time.Minute}
		s1, err := Open(t.Context(), db, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = s1.Close()
		s2, err := Open(t.Context(), db, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s2.Close() }()
		if diff := cmp.Diff(s1.Issuer().JWKS(), s2.Issuer().JWKS()); diff != "" {
			t.Errorf("keys after reopen (-want +got):\n%s", diff)
		}
	})
}

// TestCleanupLoop: the loop Open starts deletes expired refresh tokens, and
// Close stops it (goleak checks that nothing is left running).
func TestCleanupLoop(t *testing.T) {
	e := newEnv(t, newDB(t), func(c *Config) { c.CleanupInterval = 10 * time.Millisecond; c.RefreshTokenTTL = time.Hour })
	e.register(t, "janitor@example.com", password)
	e.login(t, "janitor@example.com", password)
	e.clock.Advance(2 * time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := e.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM refresh_tokens`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d refresh tokens left after 10s, want the cleanup loop to delete them", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

// TestKeysFetchedDuringAuthentication: the first token a server sees makes
// its Verifier call GetJwks from inside the authentication of that call.
// JWKSFromClient must not forward the call's authorization header, or the
// nested GetJwks would need the very keys being fetched.
func TestKeysFetchedDuringAuthentication(t *testing.T) {
	e := newEnv(t, newDB(t), nil)
	u := e.register(t, "first@example.com", password)
	token := e.login(t, "first@example.com", password).GetAccessToken()
	ctx, cancel := context.WithTimeout(caller(t, "gateway", token), 5*time.Second)
	defer cancel()
	resp, err := e.client.GetUser(ctx, &identityv1.GetUserRequest{UserId: u.GetUserId()})
	if err != nil {
		t.Fatalf("GetUser with the first token the server verifies = %v", err)
	}
	if resp.GetUser().GetUserId() != u.GetUserId() {
		t.Errorf("GetUser = %v, want %s", resp.GetUser(), u.GetUserId())
	}
}
