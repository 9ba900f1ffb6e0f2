package notify_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/google/uuid"

	eventsv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/events/v1"
	"github.com/switchboard-rpc/switchboard/internal/testpki"
	"github.com/switchboard-rpc/switchboard/services/notify"
)

// received is a message the test SMTP server accepted.
type received struct {
	from string
	to   []string
	data []byte
	tls  bool
	user string
}

// backend is a go-smtp Backend that records every message it accepts. It
// refuses recipients in reject with 550 and those in defer with 451, and
// when users is set requires AUTH PLAIN with one of them.
type backend struct {
	users     map[string]string // username → password
	reject    string
	deferRcpt string

	mu   sync.Mutex
	msgs []received
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) { return &session{b: b, c: c}, nil }

func (b *backend) messages() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]received(nil), b.msgs...)
}

type session struct {
	b    *backend
	c    *smtp.Conn
	user string
	msg  received
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, username, password string) error {
		if want, ok := s.b.users[username]; !ok || want != password {
			return smtp.ErrAuthFailed
		}
		s.user = username
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.b.users != nil && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.msg = received{from: from}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	switch to {
	case s.b.reject:
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	case s.b.deferRcpt:
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	s.msg.to = append(s.msg.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, s.msg.tls = s.c.TLSConnectionState()
	s.msg.data, s.msg.user = data, s.user
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, s.msg)
	s.b.mu.Unlock()
	return nil
}

func (s *session) Reset()        { s.msg = received{} }
func (s *session) Logout() error { return nil }

// startSMTP serves be on 127.0.0.1:0, offering STARTTLS with tlsConfig
// when it is not nil, until the end of the test, and returns its address.
func startSMTP(t *testing.T, be *backend, tlsConfig *tls.Config) string {
	t.Helper()
	s := smtp.NewServer(be)
	s.Domain = "localhost"
	s.ErrorLog = log.New(io.Discard, "", 0)
	s.TLSConfig = tlsConfig
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	s.MaxMessageBytes, s.MaxRecipients = 1<<20, 10
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	t.Cleanup(func() {
		// Shutdown waits for the connections' goroutines; every client
		// of the tests quits or hangs up.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("SMTP Shutdown = %v", err)
			_ = s.Close()
		}
		if err := <-served; err != nil {
			t.Errorf("SMTP Serve returned %v", err)
		}
	})
	return lis.Addr().String()
}

// serverTLS is the test PKI's server configuration without the client
// certificate requirement, as a mail server's.
func serverTLS(pki *testpki.PKI) *tls.Config {
	c := pki.Server.Clone()
	c.ClientAuth = tls.NoClientCert
	return c
}

func testMail(to string) *notify.Mail {
	return &notify.Mail{
		ID: uuid.NewString(), From: "shop@switchboard.local", To: to,
		Data: []byte("From: <shop@switchboard.local>\r\nTo: <" + to + ">\r\nSubject: hi\r\n\r\nhello\r\n"),
	}
}

// TestSMTPEndToEnd: the service sends over STARTTLS with AUTH PLAIN to a
// real SMTP server, which receives the rendered message.
func TestSMTPEndToEnd(t *testing.T) {
	t.Parallel()
	pki := testpki.New()
	be := &backend{users: map[string]string{"shop": "s3cret"}}
	addr := startSMTP(t, be, serverTLS(pki))
	sender, err := notify.NewSMTPSender(notify.SMTPConfig{
		Addr: addr, Username: "shop", Password: "s3cret", TLS: notify.TLSRequired,
		TLSConfig: &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	db := sqliteDB(t)
	svc := open(t, db, notify.Config{Sender: sender, From: "Shop <shop@example.com>", ShopName: "Example Shop", PollInterval: time.Hour})
	user := newID("user")
	mustHandle(t, db, svc, &eventsv1.UserRegistered{UserId: user, Email: "grace@example.com", DisplayName: "Grace Hopper"})
	waitDone(t, db, user, 1)

	msgs := be.messages()
	if len(msgs) != 1 {
		t.Fatalf("server received %d messages, want 1", len(msgs))
	}
	got := msgs[0]
	if got.from != "shop@example.com" || len(got.to) != 1 || got.to[0] != "grace@example.com" || !got.tls || got.user != "shop" {
		t.Errorf("received from %q to %v (TLS %v, user %q), want from shop@example.com to grace@example.com over TLS as shop",
			got.from, got.to, got.tls, got.user)
	}
	m := parseMessage(t, got.data)
	if s, want := m.subject(t), "Welcome to Example Shop, Grace Hopper"; s != want {
		t.Errorf("Subject = %q, want %q", s, want)
	}
	if to, want := m.header.Get("To"), `"Grace Hopper" <grace@example.com>`; to != want {
		t.Errorf("To = %q, want %q", to, want)
	}
	if !strings.Contains(m.body, "Your account for grace@example.com is ready") {
		t.Errorf("body = %q, want the welcome text", m.body)
	}
	var status string
	if err := db.QueryRowContext(t.Context(), `SELECT status FROM notifications WHERE user_id = $1`, user).Scan(&status); err != nil || status != "SENT" {
		t.Errorf("notification status = %q, %v, want SENT", status, err)
	}
}

func TestSMTPSenderOutcomes(t *testing.T) {
	t.Parallel()
	pki := testpki.New()
	tlsBackend := &backend{users: map[string]string{"shop": "s3cret"}, reject: "nobody@example.com", deferRcpt: "busy@example.com"}
	tlsAddr := startSMTP(t, tlsBackend, serverTLS(pki))
	plainBackend := &backend{}
	plainAddr := startSMTP(t, plainBackend, nil)
	clientTLS := &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12}
	authed := notify.SMTPConfig{Addr: tlsAddr, Username: "shop", Password: "s3cret", TLSConfig: clientTLS}
	with := func(c notify.SMTPConfig, change func(*notify.SMTPConfig)) notify.SMTPConfig {
		change(&c)
		return c
	}
	tests := []struct {
		name      string
		cfg       notify.SMTPConfig
		to        string
		ok        bool
		rejected  bool
		errSubstr string
	}{
		{"starttls and auth", authed, "a@example.com", true, false, ""},
		{"plain server, opportunistic", notify.SMTPConfig{Addr: plainAddr}, "b@example.com", true, false, ""},
		{"recipient rejected", authed, "nobody@example.com", false, true, "550"},
		{"recipient deferred", authed, "busy@example.com", false, false, "451"},
		{"wrong password", with(authed, func(c *notify.SMTPConfig) { c.Password = "wrong" }), "a@example.com", false, false, "auth"},
		{"starttls required but not offered", notify.SMTPConfig{Addr: plainAddr, TLS: notify.TLSRequired}, "a@example.com", false, false, "STARTTLS"},
		{"untrusted certificate", with(authed, func(c *notify.SMTPConfig) { c.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12} }), "a@example.com", false, false, "starttls"},
		{"auth not offered", notify.SMTPConfig{Addr: plainAddr, TLS: notify.TLSDisabled, Username: "u", Password: "p"}, "a@example.com", false, false, "AUTH"},
	}
	for _, tc := range tests {
		sender, err := notify.NewSMTPSender(tc.cfg)
		if err != nil {
			t.Fatalf("%s: NewSMTPSender = %v", tc.name, err)
		}
		err = sender.Send(t.Context(), testMail(tc.to))
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: Send = %v, want success", tc.name, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.errSubstr)):
			t.Errorf("%s: Send = %v, want an error mentioning %q", tc.name, err, tc.errSubstr)
		case errors.Is(err, notify.ErrRejected) != tc.rejected:
			t.Errorf("%s: Send = %v, rejected %v, want rejected %v", tc.name, err, errors.Is(err, notify.ErrRejected), tc.rejected)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error %q shows the password", tc.name, err)
		}
	}
	if n := len(tlsBackend.messages()) + len(plainBackend.messages()); n != 2 {
		t.Errorf("servers received %d messages, want 2", n)
	}
}

// TestSMTPSenderHonoursContext: a server that never answers does not hold
// Send past its context.
func TestSMTPSenderHonoursContext(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	accepted := make(chan net.Conn, 1)
	conns.Go(func() {
		c, err := lis.Accept()
		if err == nil {
			accepted <- c // holds it open, silent
		}
	})
	t.Cleanup(func() {
		_ = lis.Close()
		conns.Wait()
		select {
		case c := <-accepted:
			_ = c.Close()
		default:
		}
	})
	sender, err := notify.NewSMTPSender(notify.SMTPConfig{Addr: lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := sender.Send(ctx, testMail("a@example.com")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send to a silent server = %v, want context.DeadlineExceeded", err)
	}
}

func TestSMTPConfigRedactsPassword(t *testing.T) {
	t.Parallel()
	cfg := notify.SMTPConfig{Addr: "smtp.example.com:587", Username: "shop", Password: "s3cret", TLS: notify.TLSRequired}
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	logger.Info("smtp", slog.Any("config", cfg))
	logger.Info("smtp", "config", cfg)
	out := buf.String() + fmt.Sprint(cfg) + fmt.Sprintf("%+v %#v", cfg, cfg)
	if strings.Contains(out, "s3cret") {
		t.Errorf("the password shows in %s", out)
	}
	if !strings.Contains(buf.String(), "smtp.example.com:587") || !strings.Contains(buf.String(), `"password":"[REDACTED]"`) {
		t.Errorf("log = %s, want the address and a redacted password", buf.String())
	}
}

func TestNewSMTPSenderRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []notify.SMTPConfig{
		{},
		{Addr: "no-port"},
		{Addr: ":25"},
		{Addr: "host:25", TLS: notify.TLSMode(9)},
		{Addr: "host:25", Timeout: -time.Second},
	} {
		if _, err := notify.NewSMTPSender(cfg); err == nil {
			t.Errorf("NewSMTPSender(%+v) succeeded, want an error", cfg)
		}
	}
}
