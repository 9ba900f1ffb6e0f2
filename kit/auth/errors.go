package auth

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"

	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Reasons in the ErrorInfo (domain status.KitDomain) of the errors Verify
// and the Authenticator return. All but the last two come with
// UNAUTHENTICATED.
//
//nolint:gosec // G101: error reasons, not credentials
const (
	// ReasonTokenMissing: Verify was given an empty token.
	ReasonTokenMissing = "TOKEN_MISSING"
	// ReasonTokenMalformed: the token or the authorization header is not a
	// well-formed access token, or lacks a required claim.
	ReasonTokenMalformed = "TOKEN_MALFORMED"
	// ReasonTokenExpired: the token's exp has passed.
	ReasonTokenExpired = "TOKEN_EXPIRED"
	// ReasonTokenNotYetValid: the token's nbf or iat is in the future.
	ReasonTokenNotYetValid = "TOKEN_NOT_YET_VALID"
	// ReasonTokenRevoked: the token's jti has been revoked.
	ReasonTokenRevoked = "TOKEN_REVOKED"
	// ReasonTokenInvalidSignature: the signature does not verify, or the
	// token uses an algorithm other than EdDSA.
	ReasonTokenInvalidSignature = "TOKEN_INVALID_SIGNATURE"
	// ReasonTokenWrongAudience: the token was issued for another audience.
	ReasonTokenWrongAudience = "TOKEN_WRONG_AUDIENCE"
	// ReasonTokenWrongIssuer: the token was issued by another issuer.
	ReasonTokenWrongIssuer = "TOKEN_WRONG_ISSUER"
	// ReasonTokenUnknownKey: the token's kid is not in the key set, even
	// after a refresh.
	ReasonTokenUnknownKey = "TOKEN_UNKNOWN_KEY"

	// ReasonKeysUnavailable (UNAVAILABLE): no key set could be fetched.
	ReasonKeysUnavailable = "KEYS_UNAVAILABLE"
	// ReasonRevocationUnavailable (UNAVAILABLE): the revocation store did
	// not answer, so the token cannot be accepted.
	ReasonRevocationUnavailable = "REVOCATION_UNAVAILABLE"
)

// The errors are made once: a flood of bad tokens allocates no statuses.
var (
	errTokenMissing      = unauthenticated(ReasonTokenMissing, "access token missing")
	errTokenMalformed    = unauthenticated(ReasonTokenMalformed, "access token malformed")
	errTokenType         = unauthenticated(ReasonTokenMalformed, "token is not an access token")
	errClaimMissing      = unauthenticated(ReasonTokenMalformed, "access token lacks a required claim")
	errHeaderMalformed   = unauthenticated(ReasonTokenMalformed, `authorization metadata must be one "Bearer <token>"`)
	errTokenExpired      = unauthenticated(ReasonTokenExpired, "access token expired")
	errTokenNotYetValid  = unauthenticated(ReasonTokenNotYetValid, "access token not yet valid")
	errTokenRevoked      = unauthenticated(ReasonTokenRevoked, "access token revoked")
	errInvalidSignature  = unauthenticated(ReasonTokenInvalidSignature, "access token signature invalid")
	errWrongAlgorithm    = unauthenticated(ReasonTokenInvalidSignature, "access token algorithm not accepted")
	errWrongAudience     = unauthenticated(ReasonTokenWrongAudience, "access token issued for another audience")
	errWrongIssuer       = unauthenticated(ReasonTokenWrongIssuer, "access token issued by another issuer")
	errUnknownKey        = unauthenticated(ReasonTokenUnknownKey, "access token signed by an unknown key")
	errKeysUnavailable   = status.Unavailable(status.KitDomain, ReasonKeysUnavailable, "token verification keys unavailable", 0)
	errRevocationUnavail = status.Unavailable(status.KitDomain, ReasonRevocationUnavailable, "token revocation status unavailable", 0)
	errDeadline          = status.Error(codes.DeadlineExceeded, status.KitDomain, status.ReasonDeadlineExceeded, "deadline exceeded")
	errCanceled          = status.Error(codes.Canceled, status.KitDomain, status.ReasonCanceled, "request canceled")
)

func unauthenticated(reason, msg string) error {
	return status.Unauthenticated(status.KitDomain, reason, msg)
}

// unavailable returns the status for a failed dependency call: context
// errors keep their meaning, anything else is fallback.
func unavailable(err, fallback error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return errDeadline
	case errors.Is(err, context.Canceled):
		return errCanceled
	}
	return fallback
}
