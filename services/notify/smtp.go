package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"net/textproto"
	"time"

	"github.com/switchboard-rpc/switchboard/kit/identity"
)

// TLSMode says how an SMTPSender protects its connection.
type TLSMode int

// The TLS modes.
const (
	// TLSOpportunistic upgrades with STARTTLS when the server offers it,
	// and sends in the clear otherwise (the default). Authentication in
	// the clear is refused except to a server on localhost.
	TLSOpportunistic TLSMode = iota
	// TLSRequired fails unless the server offers STARTTLS.
	TLSRequired
	// TLSImplicit speaks TLS from the first byte ("SMTPS", port 465).
	TLSImplicit
	// TLSDisabled never uses TLS: only for a relay on the same host.
	TLSDisabled
)

// String names the mode.
func (m TLSMode) String() string {
	switch m {
	case TLSOpportunistic:
		return "opportunistic"
	case TLSRequired:
		return "starttls"
	case TLSImplicit:
		return "implicit"
	case TLSDisabled:
		return "disabled"
	}
	return fmt.Sprintf("TLSMode(%d)", int(m))
}

// Defaults of SMTPConfig.
const (
	DefaultSMTPDialTimeout = 10 * time.Second
	DefaultSMTPTimeout     = 30 * time.Second
	DefaultSMTPLocalName   = "localhost"
)

// SMTPConfig configures an SMTPSender. Only cmd/ fills it in. It
// implements slog.LogValuer, and Password never prints, so logging the
// configuration never shows the password.
type SMTPConfig struct {
	// Addr is the server's host:port, for example "smtp.example.com:587".
	Addr string
	// LocalName is the name sent with EHLO. Default "localhost".
	LocalName string
	// Username and Password, when Username is set, authenticate with
	// AUTH PLAIN, which is refused over a connection without TLS unless
	// the server is on localhost.
	Username string
	Password identity.Secret
	// TLS says when to use TLS; the zero value is TLSOpportunistic.
	TLS TLSMode
	// TLSConfig is the TLS configuration; nil verifies the server's
	// certificate against the system roots for the host of Addr, with TLS
	// 1.2 at least. ServerName defaults to the host of Addr.
	TLSConfig *tls.Config
	// DialTimeout bounds connecting. Default 10s.
	DialTimeout time.Duration
	// Timeout bounds the whole conversation for one message, connecting
	// included. Default 30s.
	Timeout time.Duration
}

// LogValue implements slog.LogValuer: the configuration without the
// password.
func (c SMTPConfig) LogValue() slog.Value {
	pw := ""
	if c.Password != "" {
		pw = "[REDACTED]"
	}
	return slog.GroupValue(
		slog.String("addr", c.Addr),
		slog.String("username", c.Username),
		slog.String("password", pw),
		slog.String("tls", c.TLS.String()),
	)
}

// SMTPSender sends each message over a connection of its own to one SMTP
// server (a relay or submission server). It is safe for concurrent use.
type SMTPSender struct {
	cfg  SMTPConfig
	host string
}

var _ Sender = (*SMTPSender)(nil)

// NewSMTPSender checks cfg and returns the sender. It does not connect.
func NewSMTPSender(cfg SMTPConfig) (*SMTPSender, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("notify: SMTP address %q is not host:port", cfg.Addr)
	}
	if cfg.TLS < TLSOpportunistic || cfg.TLS > TLSDisabled {
		return nil, fmt.Errorf("notify: unknown SMTP TLS mode %d", int(cfg.TLS))
	}
	if cfg.DialTimeout < 0 || cfg.Timeout < 0 {
		return nil, errors.New("notify: negative SMTP timeout")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultSMTPDialTimeout
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultSMTPTimeout
	}
	if cfg.LocalName == "" {
		cfg.LocalName = DefaultSMTPLocalName
	}
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		cfg.TLSConfig = cfg.TLSConfig.Clone()
	}
	if cfg.TLSConfig.ServerName == "" {
		cfg.TLSConfig.ServerName = host
	}
	return &SMTPSender{cfg: cfg, host: host}, nil
}

// Send delivers m in one SMTP conversation: connect, EHLO, STARTTLS as
// configured, AUTH when a username is set, MAIL, RCPT, DATA, QUIT. It
// returns when the server has accepted the message, when it fails, after
// Timeout, or when ctx ends. A permanent refusal (5xx) of MAIL, RCPT or
// DATA wraps ErrRejected.
func (s *SMTPSender) Send(ctx context.Context, m *Mail) error {
	err := s.send(ctx, m)
	if err == nil {
		return nil
	}
	// The connection's deadline is ctx's when that is sooner, and may
	// fire just before ctx reports it.
	cerr := ctx.Err()
	if d, ok := ctx.Deadline(); ok && cerr == nil && !time.Now().Before(d) {
		cerr = context.DeadlineExceeded
	}
	if cerr != nil {
		return fmt.Errorf("smtp %s: %w", s.cfg.Addr, errors.Join(cerr, err))
	}
	return fmt.Errorf("smtp %s: %w", s.cfg.Addr, err)
}

func (s *SMTPSender) send(ctx context.Context, m *Mail) error {
	deadline := time.Now().Add(s.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	d := net.Dialer{Timeout: s.cfg.DialTimeout, Deadline: deadline}
	var (
		conn net.Conn
		err  error
	)
	if s.cfg.TLS == TLSImplicit {
		conn, err = (&tls.Dialer{NetDialer: &d, Config: s.cfg.TLSConfig}).DialContext(ctx, "tcp", s.cfg.Addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", s.cfg.Addr)
	}
	if err != nil {
		return err
	}
	// The deadline bounds every read and write; ctx ending closes the
	// connection, which ends a blocked one at once.
	if err := conn.SetDeadline(deadline); err != nil {
		_ = conn.Close()
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	c, err := smtp.NewClient(conn, s.host)
	if err != nil {
		_ = conn.Close()
		return err
	}
	defer func() { _ = c.Close() }()
	if err := c.Hello(s.cfg.LocalName); err != nil {
		return err
	}
	if s.cfg.TLS == TLSOpportunistic || s.cfg.TLS == TLSRequired {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(s.cfg.TLSConfig); err != nil {
				return fmt.Errorf("starttls: %w", err)
			}
		} else if s.cfg.TLS == TLSRequired {
			return errors.New("the server does not offer STARTTLS, which the configuration requires")
		}
	}
	if s.cfg.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return errors.New("the server does not offer AUTH, and a username is configured")
		}
		if err := c.Auth(smtp.PlainAuth("", s.cfg.Username, string(s.cfg.Password), s.host)); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	if err := c.Mail(m.From); err != nil {
		return rejected("MAIL FROM", err)
	}
	if err := c.Rcpt(m.To); err != nil {
		return rejected("RCPT TO", err)
	}
	w, err := c.Data()
	if err != nil {
		return rejected("DATA", err)
	}
	if _, err := w.Write(m.Data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return rejected("end of DATA", err)
	}
	// The message is accepted; a failed QUIT changes nothing.
	_ = c.Quit()
	return nil
}

// rejected wraps a 5xx reply to cmd with ErrRejected; other errors stay
// transient.
func rejected(cmd string, err error) error {
	var tp *textproto.Error
	if errors.As(err, &tp) && tp.Code >= 500 && tp.Code < 600 {
		return fmt.Errorf("%w: %s: %w", ErrRejected, cmd, err)
	}
	return fmt.Errorf("%s: %w", cmd, err)
}
