package identity

import (
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	identityv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/identity/v1"
	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Limits of the requests, enforced by the rules Register adds.
const (
	// MaxEmailLen bounds an e-mail address, in bytes (RFC 5321).
	MaxEmailLen = 254
	// MaxEmailLocalLen bounds the part before the "@", in bytes.
	MaxEmailLocalLen = 64
	// MinPasswordLen is the least length of a new password, in
	// characters. Login accepts 1 to MaxPasswordLen, so that raising the
	// minimum never locks out a user with an older, shorter password.
	MinPasswordLen = 12
	// MaxPasswordLen bounds a password, in characters.
	MaxPasswordLen = 128
	// MaxDisplayNameLen bounds a display name, in characters.
	MaxDisplayNameLen = 100
	// MaxIdempotencyKeyLen bounds an idempotency key, in characters.
	MaxIdempotencyKeyLen = 128
	// MaxTokenLen bounds a token in a request, in bytes.
	MaxTokenLen = auth.MaxTokenLength
	// MaxRoles bounds the roles SetRoles accepts.
	MaxRoles = 16
	// MaxRoleLen bounds the length of a role, in characters.
	MaxRoleLen = 64
)

// Token type hints of RevokeTokenRequest (RFC 7009).
const (
	HintAccessToken  = "access_token"
	HintRefreshToken = "refresh_token"
)

// addRules adds the validation rules of every request of IdentityService to s.
func addRules(s *validate.Set) {
	validate.Rule(s, func(m *identityv1.RegisterRequest, v *validate.Violations) {
		checkEmail(v, "email", m.GetEmail())
		v.Length("password", m.GetPassword(), MinPasswordLen, MaxPasswordLen)
		checkDisplayName(v, "display_name", m.GetDisplayName())
		v.Length("idempotency_key", m.GetIdempotencyKey(), 0, MaxIdempotencyKeyLen)
	})
	validate.Rule(s, func(m *identityv1.LoginRequest, v *validate.Violations) {
		checkEmail(v, "email", m.GetEmail())
		v.Length("password", m.GetPassword(), 1, MaxPasswordLen)
	})
	validate.Rule(s, func(m *identityv1.RefreshRequest, v *validate.Violations) {
		checkToken(v, "refresh_token", m.GetRefreshToken())
	})
	validate.Rule(s, func(m *identityv1.RevokeTokenRequest, v *validate.Violations) {
		checkToken(v, "token", m.GetToken())
		switch m.GetTokenTypeHint() {
		case "", HintAccessToken, HintRefreshToken:
		default:
			v.Add("token_type_hint", `must be empty, "access_token" or "refresh_token"`)
		}
	})
	validate.Rule(s, func(m *identityv1.GetUserRequest, v *validate.Violations) {
		checkUserID(v, "user_id", m.GetUserId())
	})
}

func checkToken(v *validate.Violations, field, tok string) {
	switch {
	case tok == "":
		v.Add(field, "is required")
	case len(tok) > MaxTokenLen:
		v.Addf(field, "must be at most %d bytes", MaxTokenLen)
	}
}

func checkUserID(v *validate.Violations, field, id string) {
	if id == "" {
		v.Add(field, "is required")
		return
	}
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		v.Add(field, "must be a UUID such as 123e4567-e89b-12d3-a456-426614174000")
	}
}

func checkEmail(v *validate.Violations, field, email string) {
	if email == "" {
		v.Add(field, "is required")
		return
	}
	if len(email) > MaxEmailLen+32 { // room for surrounding spaces, which are trimmed
		v.Addf(field, "must be at most %d bytes", MaxEmailLen)
		return
	}
	if _, _, err := normaliseEmail(email); err != "" {
		v.Add(field, err)
	}
}

func checkDisplayName(v *validate.Violations, field, name string) {
	v.Length(field, name, 1, MaxDisplayNameLen)
	if !utf8.ValidString(name) || name == "" {
		return
	}
	if strings.TrimSpace(name) == "" {
		v.Add(field, "must not be blank")
		return
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		v.Add(field, "must not contain control characters")
	}
}

// normaliseEmail returns the normalised form of an e-mail address (what
// User.email shows) and its key (what identifies the account), or a
// description of what is wrong with it.
//
// The address is trimmed of surrounding white space and must then be a
// plain addr-spec: a dot-atom local part, "@", and a domain, at most 254
// bytes, the local part at most 64 bytes; quoted local parts, comments and
// display names are refused. The domain is lower-cased; the local part
// keeps its case in the normalised form, since RFC 5321 lets a mail server
// tell cases apart and mail is sent to it as given. The key is the whole
// normalised address lower-cased: no real mail system gives different
// people addresses that differ only in case, so one account per address
// regardless of case is what users expect, and login is case-insensitive.
func normaliseEmail(email string) (normalised, key, problem string) {
	email = strings.TrimSpace(email)
	if len(email) > MaxEmailLen {
		return "", "", "must be at most 254 bytes"
	}
	if !utf8.ValidString(email) {
		return "", "", "must be valid UTF-8"
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Name != "" || addr.Address != email {
		return "", "", "must be an e-mail address such as name@example.com"
	}
	at := strings.LastIndexByte(email, '@')
	local, domain := email[:at], email[at+1:]
	if len(local) > MaxEmailLocalLen {
		return "", "", "must have at most 64 bytes before the @"
	}
	if strings.HasPrefix(domain, "[") {
		return "", "", "must name a domain, not an IP address"
	}
	normalised = local + "@" + strings.ToLower(domain)
	return normalised, strings.ToLower(normalised), ""
}

// emailKey returns the account key of a valid e-mail address.
func emailKey(email string) string {
	_, key, _ := normaliseEmail(email)
	return key
}
