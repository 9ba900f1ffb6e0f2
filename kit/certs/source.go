package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultReloadInterval is how often, at most, a Source checks whether its
// files changed.
const DefaultReloadInterval = 5 * time.Second

// Files names the PEM files of a Source.
type Files struct {
	// Cert is the certificate, optionally followed by intermediates.
	Cert string
	// Key is the certificate's private key.
	Key string
	// CA is the trust bundle: the CA certificates that peers' certificates
	// must chain to.
	CA string
}

// FilesIn returns the files of name in a directory laid out by
// EnsureDevPKI: <dir>/<name>.pem, <dir>/<name>-key.pem and <dir>/ca.pem.
func FilesIn(dir, name string) Files {
	return Files{
		Cert: filepath.Join(dir, name+".pem"),
		Key:  filepath.Join(dir, name+"-key.pem"),
		CA:   filepath.Join(dir, CAFile),
	}
}

// Option configures a Source.
type Option func(*sourceOptions)

type sourceOptions struct {
	interval time.Duration
	logger   *slog.Logger
	name     string
}

// WithReloadInterval sets how often, at most, the Source stats its files
// to see whether they changed (default DefaultReloadInterval). Zero or less
// turns automatic reloading off; Reload still works.
func WithReloadInterval(d time.Duration) Option {
	return func(o *sourceOptions) { o.interval = d }
}

// WithLogger sets the logger for reloads and their failures. The default
// discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *sourceOptions) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithName sets the Source's name, the "name" label of its metrics and the
// "name" attribute of its log lines. The default is the service name of
// the certificate's SPIFFE ID, else the certificate file's name without
// ".pem".
func WithName(name string) Option {
	return func(o *sourceOptions) { o.name = name }
}

// material is one generation of a Source's certificate and trust bundle.
// It is never modified once published.
type material struct {
	cert   *tls.Certificate // Leaf is set
	roots  *x509.CertPool
	cas    []*x509.Certificate
	server *tls.Config // what ServerTLS hands to handshakes of this generation
}

// fileStamp is what a stat said about one file; a change of any part means
// the file changed.
type fileStamp struct {
	info os.FileInfo // nil if stat failed
	err  string
}

func (a fileStamp) same(b fileStamp) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil && a.err == b.err
	}
	return os.SameFile(a.info, b.info) && a.info.ModTime().Equal(b.info.ModTime()) && a.info.Size() == b.info.Size()
}

// Source provides a certificate, its key and a CA trust bundle read from
// files, and re-reads them when they change (see the package
// documentation): each handshake uses the material current when it
// starts. A Source is safe for concurrent use. It starts no goroutines and
// keeps no files open, so it needs no closing; drop it when the servers
// and clients using it are done.
type Source struct {
	files    Files
	name     string
	interval time.Duration
	logger   *slog.Logger

	mat  atomic.Pointer[material]
	next atomic.Int64 // unix nanoseconds before which no check is due

	mu   sync.Mutex   // serializes reloads
	seen [3]fileStamp // the files as stat saw them before the last read

	leafExpiry, caExpiry prometheus.Gauge
	reloads, failures    prometheus.Counter
	collector            prometheus.Collector
}

// NewSource reads files and returns a Source serving them. It fails if
// they cannot be read, the key does not match the certificate, or the
// certificate does not chain to the trust bundle (or has expired).
func NewSource(files Files, opts ...Option) (*Source, error) {
	o := sourceOptions{interval: DefaultReloadInterval, logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	stamps := stat(files)
	m, err := load(files)
	if err != nil {
		return nil, err
	}
	name := o.name
	if name == "" {
		if svc, err := ServiceFromCertificate(m.cert.Leaf); err == nil {
			name = svc.Name
		} else {
			name = strings.TrimSuffix(filepath.Base(files.Cert), ".pem")
		}
	}
	s := &Source{files: files, name: name, interval: o.interval, logger: o.logger, seen: stamps}
	s.initMetrics()
	s.publish(m)
	s.next.Store(time.Now().Add(s.interval).UnixNano())
	return s, nil
}

// Name returns the Source's name (see WithName).
func (s *Source) Name() string { return s.name }

// Leaf returns the certificate that new handshakes present.
func (s *Source) Leaf() *x509.Certificate { return s.mat.Load().cert.Leaf }

// Reload reads the files now, whether or not they changed. On failure it
// keeps the material in use, counts and logs the failure, and returns the
// error.
func (s *Source) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked(stat(s.files))
}

// current returns the material for a new handshake, first checking the
// files if the reload interval has passed.
func (s *Source) current() *material {
	s.maybeCheck()
	return s.mat.Load()
}

// maybeCheck checks the files if the interval has passed since the last
// check. Of concurrent callers one checks; the others go on with the
// material they have.
func (s *Source) maybeCheck() {
	if s.interval <= 0 {
		return
	}
	now := time.Now().UnixNano()
	next := s.next.Load()
	if now < next || !s.next.CompareAndSwap(next, now+int64(s.interval)) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	stamps := stat(s.files)
	if sameStamps(stamps, s.seen) {
		return
	}
	_ = s.reloadLocked(stamps) // counted and logged there
}

func sameStamps(a, b [3]fileStamp) bool {
	for i := range a {
		if !a[i].same(b[i]) {
			return false
		}
	}
	return true
}

func stat(files Files) [3]fileStamp {
	var st [3]fileStamp
	for i, path := range []string{files.Cert, files.Key, files.CA} {
		info, err := os.Stat(path)
		if err != nil {
			st[i].err = err.Error()
			continue
		}
		st[i].info = info
	}
	return st
}

// reloadLocked loads the files, which stat saw as stamps just before. The
// stamps are remembered even on failure, so broken files are reported once
// and tried again only when they change.
func (s *Source) reloadLocked(stamps [3]fileStamp) error {
	s.seen = stamps
	m, err := load(s.files)
	if err != nil {
		s.failures.Inc()
		s.logger.LogAttrs(context.Background(), slog.LevelError, "certificate reload failed; keeping the certificate in use",
			slog.String("name", s.name),
			slog.String("cert_file", s.files.Cert),
			slog.String("serial", s.Leaf().SerialNumber.Text(16)),
			slog.Any("error", err))
		return err
	}
	s.publish(m)
	s.reloads.Inc()
	s.logger.LogAttrs(context.Background(), slog.LevelInfo, "certificate reloaded",
		slog.String("name", s.name),
		slog.String("cert_file", s.files.Cert),
		slog.String("serial", m.cert.Leaf.SerialNumber.Text(16)),
		slog.Time("not_after", m.cert.Leaf.NotAfter))
	return nil
}

func (s *Source) publish(m *material) {
	s.mat.Store(m)
	s.leafExpiry.Set(float64(m.cert.Leaf.NotAfter.Unix()))
	// The CA that expires first is the one to watch: after it, peers
	// holding certificates it signed are refused.
	first := m.cas[0].NotAfter
	for _, c := range m.cas[1:] {
		if c.NotAfter.Before(first) {
			first = c.NotAfter
		}
	}
	s.caExpiry.Set(float64(first.Unix()))
}

// load reads and checks one generation of material.
func load(files Files) (*material, error) {
	certPEM, err := readFile(files.Cert)
	if err != nil {
		return nil, fmt.Errorf("load certificate: %w", err)
	}
	keyPEM, err := readFile(files.Key)
	if err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	caPEM, err := readFile(files.CA)
	if err != nil {
		return nil, fmt.Errorf("load CA bundle: %w", err)
	}
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s: %w", files.Cert, err)
	}
	cas, err := parseCertificates(caPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA bundle %s: %w", files.CA, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load key %s for %s: %w", files.Key, files.Cert, err)
	}
	pair.Leaf = chain[0]
	roots := x509.NewCertPool()
	for _, c := range cas {
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("load CA bundle %s: %q is not a CA certificate", files.CA, c.Subject.CommonName)
		}
		roots.AddCert(c)
	}
	var inter *x509.CertPool
	if len(chain) > 1 {
		inter = x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("load certificate %s: not valid under CA bundle %s: %w", files.Cert, files.CA, err)
	}
	m := &material{cert: &pair, roots: roots, cas: cas}
	m.server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
		NextProtos:   []string{"h2"},
		// A resumed session would skip verifying the client against the
		// current bundle; gRPC connections live long, so full handshakes
		// cost little.
		SessionTicketsDisabled: true,
		VerifyConnection:       verifyClientIdentity,
	}
	return m, nil
}

var errNoVerifiedChain = errors.New("certs: no verified client certificate chain")

// verifyClientIdentity runs after the TLS stack verified the client's chain
// and refuses a client certificate without a Switchboard identity.
func verifyClientIdentity(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errNoVerifiedChain
	}
	if _, err := ServiceFromCertificate(cs.VerifiedChains[0][0]); err != nil {
		return fmt.Errorf("certs: client certificate: %w", err)
	}
	return nil
}

// Collector returns the Source's metrics, for the caller to register once:
//
//   - switchboard_certificate_expiry_timestamp_seconds{name, kind="leaf"}:
//     when the certificate expires, in Unix seconds;
//   - switchboard_certificate_expiry_timestamp_seconds{name, kind="ca"}:
//     when the CA bundle's first CA to expire does;
//   - switchboard_certificate_reloads_total{name}: reloads that succeeded;
//   - switchboard_certificate_reload_errors_total{name}: reloads that
//     failed and kept the old material.
//
// The name label is the Source's name, so the Sources of several services
// register in one registry side by side. A scrape also checks the files,
// like a handshake does, so the gauges follow the files even on an idle
// server.
func (s *Source) Collector() prometheus.Collector { return s.collector }

func (s *Source) initMetrics() {
	expiry := func(kind string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "switchboard_certificate_expiry_timestamp_seconds",
			Help:        "When a certificate expires, in Unix seconds: the leaf a process presents, or the first CA of its trust bundle to expire.",
			ConstLabels: prometheus.Labels{"name": s.name, "kind": kind},
		})
	}
	s.leafExpiry, s.caExpiry = expiry("leaf"), expiry("ca")
	s.reloads = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "switchboard_certificate_reloads_total",
		Help:        "Reloads of changed certificate files that succeeded.",
		ConstLabels: prometheus.Labels{"name": s.name},
	})
	s.failures = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "switchboard_certificate_reload_errors_total",
		Help:        "Reloads of changed certificate files that failed; the certificate in use was kept.",
		ConstLabels: prometheus.Labels{"name": s.name},
	})
	s.collector = &collector{s: s, metrics: []prometheus.Collector{s.leafExpiry, s.caExpiry, s.reloads, s.failures}}
}

type collector struct {
	s       *Source
	metrics []prometheus.Collector
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		m.Describe(ch)
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.s.maybeCheck()
	for _, m := range c.metrics {
		m.Collect(ch)
	}
}
