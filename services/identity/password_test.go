package identity

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// phcPattern is the PHC string format of an argon2id hash.
var phcPattern = regexp.MustCompile(`^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$`)

func TestPasswordHashRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params Argon2Params
		want   string // the parameter section
	}{
		{"default", DefaultArgon2Params, "m=65536,t=1,p=2"},
		{"test", testArgon2Params, "m=64,t=1,p=1"},
		{"custom", Argon2Params{Time: 2, MemoryKiB: 128, Threads: 4, SaltLen: 8, KeyLen: 16}, "m=128,t=2,p=4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const password = "correct horse battery staple"
			h := hashPassword(password, tc.params)
			m := phcPattern.FindStringSubmatch(h)
			if m == nil {
				t.Fatalf("hashPassword = %q, not in PHC argon2id format", h)
			}
			if got := strings.Join([]string{"m=" + m[1], "t=" + m[2], "p=" + m[3]}, ","); got != tc.want {
				t.Errorf("parameters = %s, want %s", got, tc.want)
			}
			parsed, err := parseHash(h)
			if err != nil {
				t.Fatalf("parseHash(%q): %v", h, err)
			}
			if parsed.params != tc.params {
				t.Errorf("parseHash params = %+v, want %+v", parsed.params, tc.params)
			}
			ok, stale, err := verifyPassword(password, h, tc.params)
			if !ok || stale || err != nil {
				t.Errorf("verifyPassword(right) = %v, %v, %v, want true, false, nil", ok, stale, err)
			}
			if tc.name == "default" {
				return // 64 MiB per hash: the cheap parameters cover the rest
			}
			ok, _, err = verifyPassword(password+"!", h, tc.params)
			if ok || err != nil {
				t.Errorf("verifyPassword(wrong) = %v, %v, want false, nil", ok, err)
			}
			other := tc.params
			other.Time++
			if _, stale, _ := verifyPassword(password, h, other); !stale {
				t.Errorf("verifyPassword with other current params: stale = false, want true")
			}
			if h2 := hashPassword(password, tc.params); h2 == h {
				t.Errorf("two hashes of one password are equal: the salt is not random")
			}
		})
	}
}

func TestParseHashRejects(t *testing.T) {
	good := hashPassword("some password!", testArgon2Params)
	parts := strings.Split(good, "$") // "", argon2id, v=19, params, salt, key
	for _, tc := range []struct{ name, hash string }{
		{"empty", ""},
		{"argon2i", strings.Replace(good, "argon2id", "argon2i", 1)},
		{"version", strings.Replace(good, "v=19", "v=16", 1)},
		{"missing param", "$argon2id$v=19$m=64,t=1$" + parts[4] + "$" + parts[5]},
		{"unknown param", "$argon2id$v=19$m=64,t=1,p=1,x=2$" + parts[4] + "$" + parts[5]},
		{"huge memory", "$argon2id$v=19$m=4194304,t=1,p=1$" + parts[4] + "$" + parts[5]},
		{"huge time", "$argon2id$v=19$m=64,t=1000,p=1$" + parts[4] + "$" + parts[5]},
		{"zero threads", "$argon2id$v=19$m=64,t=1,p=0$" + parts[4] + "$" + parts[5]},
		{"bad salt", "$argon2id$v=19$m=64,t=1,p=1$!!$" + parts[5]},
		{"short key", "$argon2id$v=19$m=64,t=1,p=1$" + parts[4] + "$AAAA"},
		{"padded", good + "="},
		{"extra field", good + "$x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseHash(tc.hash); !errors.Is(err, errHashFormat) {
				t.Errorf("parseHash(%q) = %v, want errHashFormat", tc.hash, err)
			}
			if ok, _, err := verifyPassword("some password!", tc.hash, testArgon2Params); ok || err == nil {
				t.Errorf("verifyPassword(%q) = %v, %v, want false and an error", tc.hash, ok, err)
			}
		})
	}
}

func TestNormaliseEmail(t *testing.T) {
	for _, tc := range []struct{ in, normalised, key string }{
		{"ann@example.com", "ann@example.com", "ann@example.com"},
		{"  Ann.Lee@Example.COM \t", "Ann.Lee@example.com", "ann.lee@example.com"},
		{"a+tag@sub.EXAMPLE.org", "a+tag@sub.example.org", "a+tag@sub.example.org"},
		{"root@localhost", "root@localhost", "root@localhost"},
	} {
		normalised, key, problem := normaliseEmail(tc.in)
		if normalised != tc.normalised || key != tc.key || problem != "" {
			t.Errorf("normaliseEmail(%q) = %q, %q, %q, want %q, %q, \"\"", tc.in, normalised, key, problem, tc.normalised, tc.key)
		}
	}
	for _, in := range []string{
		"", "ann", "ann@", "@example.com", "ann@@example.com", "Ann <ann@example.com>",
		`"ann lee"@example.com`, "ann@[127.0.0.1]", "ann@example.com (comment)",
		strings.Repeat("a", 65) + "@example.com", "a@" + strings.Repeat("b", 250) + ".com",
		"ann@exa mple.com", "ann\x00@example.com", "ann@example.com\xff",
	} {
		if _, _, problem := normaliseEmail(in); problem == "" {
			t.Errorf("normaliseEmail(%q) accepted it, want a problem", in)
		}
	}
}
