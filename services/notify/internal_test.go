package notify

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	typev1 "github.com/switchboard-rpc/switchboard/gen/switchboard/type/v1"
)

func TestFormatMoney(t *testing.T) {
	tests := []struct {
		amount int64
		code   string
		want   string
	}{
		{1250, "EUR", "12.50 EUR"},
		{5, "USD", "0.05 USD"},
		{0, "USD", "0.00 USD"},
		{-1999, "GBP", "-19.99 GBP"},
		{1200, "JPY", "1200 JPY"},
		{1234, "KWD", "1.234 KWD"},
		{7, "BHD", "0.007 BHD"},
	}
	for _, tc := range tests {
		if got := formatMoney(&typev1.Money{AmountMinor: tc.amount, CurrencyCode: tc.code}); got != tc.want {
			t.Errorf("formatMoney(%d %s) = %q, want %q", tc.amount, tc.code, got, tc.want)
		}
	}
	if got := formatMoney(nil); got != "" {
		t.Errorf("formatMoney(nil) = %q, want empty", got)
	}
}

func TestBackoff(t *testing.T) {
	s := &Service{cfg: Config{RetryBackoff: time.Second, MaxRetryBackoff: 10 * time.Second}}
	for attempt, want := range map[int]time.Duration{
		1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 90: 10 * time.Second,
	} {
		if got := s.backoff(attempt); got != want {
			t.Errorf("backoff(%d) = %v, want %v", attempt, got, want)
		}
	}
}

func TestErrorText(t *testing.T) {
	long := strings.Repeat("é", maxErrorLen) // two bytes each
	got := errorText(errors.New(long))
	if len(got) > maxErrorLen || !utf8.ValidString(got) || !strings.HasPrefix(long, got) {
		t.Errorf("errorText of %d bytes = %d bytes, valid %v; want a valid prefix of at most %d", len(long), len(got), utf8.ValidString(got), maxErrorLen)
	}
	if got := errorText(errors.New("bad \xff byte")); !utf8.ValidString(got) {
		t.Errorf("errorText kept invalid UTF-8: %q", got)
	}
}
