package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the argon2id parameters new password hashes are made
// with. Every hash records its own parameters (PHC string format), so they
// can change at any time: old hashes still verify, and a successful login
// re-hashes a password whose hash used other parameters.
type Argon2Params struct {
	// Time is the number of passes over the memory. Default 1.
	Time uint32
	// MemoryKiB is the memory used, in KiB. Default 65536 (64 MiB).
	MemoryKiB uint32
	// Threads is the degree of parallelism. Default 2.
	Threads uint8
	// SaltLen is the length of the random salt in bytes. Default 16.
	SaltLen uint32
	// KeyLen is the length of the derived key in bytes. Default 32.
	KeyLen uint32
}

// DefaultArgon2Params are the parameters of Config.Argon2 when it is zero:
// one pass over 64 MiB with two lanes, a 16-byte salt and a 32-byte key
// (RFC 9106 section 4's second recommended option, with fewer lanes).
var DefaultArgon2Params = Argon2Params{Time: 1, MemoryKiB: 64 << 10, Threads: 2, SaltLen: 16, KeyLen: 32}

// Bounds of Argon2Params, for Config.Argon2 and for the parameters read
// back from a stored hash.
const (
	// MinArgon2MemoryKiB is the least memory Config.Argon2 may use (the
	// OWASP minimum for argon2id, 19 MiB), unless
	// Config.InsecureTestHashing is set.
	MinArgon2MemoryKiB = 19 << 10
	// MaxArgon2MemoryKiB bounds the memory of one hash: 1 GiB.
	MaxArgon2MemoryKiB = 1 << 20
	// MaxArgon2Time bounds the passes of one hash.
	MaxArgon2Time = 16
	// MinSaltLen bounds the salt length from below.
	MinSaltLen = 8
	// MaxSaltLen bounds the salt length.
	MaxSaltLen = 64
	// MinKeyLen bounds the derived key length from below.
	MinKeyLen = 16
	// MaxKeyLen bounds the derived key length.
	MaxKeyLen = 64
)

// testArgon2Params are used instead of Config.Argon2 when
// Config.InsecureTestHashing is set: fast, and worthless against an attacker.
var testArgon2Params = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1, SaltLen: 16, KeyLen: 32}

// check reports whether p is within the bounds above; minMemory is the
// least memory allowed.
func (p Argon2Params) check(minMemory uint32) error {
	switch {
	case p.Time < 1 || p.Time > MaxArgon2Time:
		return fmt.Errorf("argon2 time %d not between 1 and %d", p.Time, MaxArgon2Time)
	case p.Threads < 1:
		return errors.New("argon2 threads must be at least 1")
	case p.MemoryKiB < minMemory || p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > MaxArgon2MemoryKiB:
		return fmt.Errorf("argon2 memory %d KiB not between %d and %d KiB (and at least 8 per thread)",
			p.MemoryKiB, minMemory, MaxArgon2MemoryKiB)
	case p.SaltLen < MinSaltLen || p.SaltLen > MaxSaltLen:
		return fmt.Errorf("argon2 salt length %d not between %d and %d", p.SaltLen, MinSaltLen, MaxSaltLen)
	case p.KeyLen < MinKeyLen || p.KeyLen > MaxKeyLen:
		return fmt.Errorf("argon2 key length %d not between %d and %d", p.KeyLen, MinKeyLen, MaxKeyLen)
	}
	return nil
}

// phcPrefix opens every hash: the algorithm and the argon2 version (0x13).
const phcPrefix = "$argon2id$v=19$"

// b64 is the PHC string format's base64: standard alphabet, no padding.
var b64 = base64.RawStdEncoding.Strict()

// errHashFormat is returned for a stored hash that is not one this package
// writes.
var errHashFormat = errors.New("identity: password hash is not a PHC argon2id string")

// hashPassword returns the argon2id hash of password with a new random
// salt, in PHC string format:
//
//	$argon2id$v=19$m=65536,t=1,p=2$<salt>$<key>
//
// with salt and key in unpadded standard base64.
func hashPassword(password string, p Argon2Params) string {
	salt := make([]byte, p.SaltLen)
	_, _ = rand.Read(salt) // never fails (crypto/rand)
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, p.KeyLen)
	return phcPrefix + "m=" + strconv.FormatUint(uint64(p.MemoryKiB), 10) +
		",t=" + strconv.FormatUint(uint64(p.Time), 10) +
		",p=" + strconv.FormatUint(uint64(p.Threads), 10) +
		"$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key)
}

// phcHash is a parsed hash.
type phcHash struct {
	params Argon2Params
	salt   []byte
	key    []byte
}

// parseHash parses a hash written by hashPassword, checking that its
// parameters are within bounds (any memory from 8 KiB per thread up), so
// that a corrupted row cannot make a login allocate without limit.
func parseHash(encoded string) (phcHash, error) {
	rest, ok := strings.CutPrefix(encoded, phcPrefix)
	if !ok {
		return phcHash{}, errHashFormat
	}
	parts := strings.Split(rest, "$")
	if len(parts) != 3 {
		return phcHash{}, errHashFormat
	}
	var h phcHash
	seen := 0
	for kv := range strings.SplitSeq(parts[0], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return phcHash{}, errHashFormat
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return phcHash{}, errHashFormat
		}
		switch k {
		case "m":
			h.params.MemoryKiB = uint32(n)
			seen |= 1
		case "t":
			h.params.Time = uint32(n)
			seen |= 2
		case "p":
			if n > 255 {
				return phcHash{}, errHashFormat
			}
			h.params.Threads = uint8(n)
			seen |= 4
		default:
			return phcHash{}, errHashFormat
		}
	}
	if seen != 7 {
		return phcHash{}, errHashFormat
	}
	var err error
	if h.salt, err = b64.DecodeString(parts[1]); err != nil {
		return phcHash{}, errHashFormat
	}
	if h.key, err = b64.DecodeString(parts[2]); err != nil {
		return phcHash{}, errHashFormat
	}
	h.params.SaltLen, h.params.KeyLen = uint32(len(h.salt)), uint32(len(h.key)) //nolint:gosec // bounded by the check below
	if err := h.params.check(0); err != nil {
		return phcHash{}, fmt.Errorf("%w: %w", errHashFormat, err)
	}
	return h, nil
}

// verifyPassword reports whether password matches the hash encoded, in
// constant time with respect to the key, and whether the hash was made with
// parameters other than want (so it should be replaced). A malformed hash
// is an error.
func verifyPassword(password, encoded string, want Argon2Params) (ok, stale bool, err error) {
	h, err := parseHash(encoded)
	if err != nil {
		return false, false, err
	}
	key := argon2.IDKey([]byte(password), h.salt, h.params.Time, h.params.MemoryKiB, h.params.Threads, h.params.KeyLen)
	ok = subtle.ConstantTimeCompare(key, h.key) == 1
	return ok, h.params != want, nil
}
