package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Files of a certificate directory.
const (
	// CAFile holds the CA certificate, followed by the previous CA
	// certificate while it is still valid after a rotation.
	CAFile = "ca.pem"
	// CAKeyFile holds the CA's private key.
	CAKeyFile = "ca-key.pem"
)

// Default lifetimes. Short lives make a leaked key worth little; they are
// safe because EnsureDevPKI renews early and Sources reload on their own.
const (
	// DefaultCALifetime is how long a development CA is valid: one year.
	DefaultCALifetime = 365 * 24 * time.Hour
	// DefaultLifetime is how long a service or operator certificate is
	// valid: seven days.
	DefaultLifetime = 7 * 24 * time.Hour
)

// backdate moves NotBefore into the past, so a peer whose clock is a little
// behind accepts a certificate issued a moment ago.
const backdate = 5 * time.Minute

// IssueOption configures CreateCA, CA.Issue and EnsureDevPKI. Each ignores
// the options that do not concern it.
type IssueOption func(*issueOptions)

type issueOptions struct {
	caLifetime time.Duration
	lifetime   time.Duration
	dns        []string
	ips        []net.IP
	now        func() time.Time
}

func newIssueOptions(opts []IssueOption) issueOptions {
	o := issueOptions{caLifetime: DefaultCALifetime, lifetime: DefaultLifetime, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithLifetime sets how long issued service and operator certificates are
// valid (default DefaultLifetime). A certificate never outlives its CA.
func WithLifetime(d time.Duration) IssueOption {
	return func(o *issueOptions) { o.lifetime = d }
}

// WithCALifetime sets how long a new CA is valid (default
// DefaultCALifetime).
func WithCALifetime(d time.Duration) IssueOption {
	return func(o *issueOptions) { o.caLifetime = d }
}

// WithDNSNames adds DNS SANs to issued certificates, after "localhost" and
// the service name.
func WithDNSNames(names ...string) IssueOption {
	return func(o *issueOptions) { o.dns = append(o.dns, names...) }
}

// WithIPAddresses adds IP SANs to issued certificates, after 127.0.0.1 and
// ::1.
func WithIPAddresses(ips ...net.IP) IssueOption {
	return func(o *issueOptions) { o.ips = append(o.ips, ips...) }
}

// WithClock sets the clock that validity periods start from and that
// EnsureDevPKI judges expiry by (default time.Now). For tests.
func WithClock(now func() time.Time) IssueOption {
	return func(o *issueOptions) { o.now = now }
}

// CA is a certificate authority whose certificate and key are files in a
// directory, and which issues certificates into that directory. A CA is
// safe for concurrent use, but two CAs (or processes) must not issue the
// same name in the same directory at once.
type CA struct {
	dir    string
	cert   *x509.Certificate
	key    crypto.Signer
	bundle []*x509.Certificate
}

// CreateCA creates a new CA in dir (created with mode 0700 if missing):
// ca.pem and ca-key.pem (mode 0600). It refuses, with an error wrapping
// fs.ErrExist, to replace either file. Options: WithCALifetime, WithClock.
func CreateCA(dir string, opts ...IssueOption) (*CA, error) {
	o := newIssueOptions(opts)
	for _, f := range []string{CAFile, CAKeyFile} {
		path := filepath.Join(dir, f)
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("create CA: %s: %w", path, fs.ErrExist)
		}
	}
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	return createCA(dir, o, nil)
}

// createCA writes a new CA over any in dir. The trust bundle in ca.pem is
// the new certificate followed by those of previous that are still valid.
func createCA(dir string, o issueOptions, previous []*x509.Certificate) (*CA, error) {
	if o.caLifetime <= 0 {
		return nil, fmt.Errorf("create CA: lifetime %v is not positive", o.caLifetime)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	now := o.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Switchboard development CA", Organization: []string{"Switchboard"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(o.caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	bundle := []*x509.Certificate{cert}
	for _, c := range previous {
		if now.Before(c.NotAfter) && !c.Equal(cert) {
			bundle = append(bundle, c)
		}
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	// Key first: a crash in between leaves a key without its certificate,
	// and EnsureDevPKI starts over when ca.pem is missing.
	if err := writeFile(filepath.Join(dir, CAKeyFile), keyPEM, keyPerm); err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	if err := writeFile(filepath.Join(dir, CAFile), encodeCertificates(bundle...), certPerm); err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	return &CA{dir: dir, cert: cert, key: key, bundle: bundle}, nil
}

// LoadCA loads the CA in dir: the first certificate of ca.pem, which must
// be a CA certificate, and the key in ca-key.pem, which must match it.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	data, err := readFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	bundle, err := parseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", certPath, err)
	}
	cert := bundle[0]
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("load CA: %s: first certificate %q is not a CA", certPath, cert.Subject.CommonName)
	}
	data, err = readFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	key, err := parsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", keyPath, err)
	}
	if !matches(key, cert) {
		return nil, fmt.Errorf("load CA: %s does not match the certificate in %s", keyPath, certPath)
	}
	return &CA{dir: dir, cert: cert, key: key, bundle: bundle}, nil
}

// Dir returns the directory of the CA's files.
func (c *CA) Dir() string { return c.dir }

// Certificate returns the CA certificate that signs what c issues.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Issue issues a certificate for the service name into the CA's directory:
// <name>.pem and <name>-key.pem (mode 0600), replacing any there. Its
// identity is the URI SAN spiffe://switchboard.local/<name>; it also names
// "localhost", name, 127.0.0.1 and ::1, serves as server and as client,
// and has a fresh ECDSA P-256 key. Options: WithLifetime, WithDNSNames,
// WithIPAddresses, WithClock. Issue returns the new certificate.
func (c *CA) Issue(name string, opts ...IssueOption) (*x509.Certificate, error) {
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	o := newIssueOptions(opts)
	if o.lifetime <= 0 {
		return nil, fmt.Errorf("issue %s: lifetime %v is not positive", name, o.lifetime)
	}
	for _, d := range o.dns {
		if d == "" {
			return nil, fmt.Errorf("issue %s: empty DNS name", name)
		}
	}
	for _, ip := range o.ips {
		if ip.To16() == nil {
			return nil, fmt.Errorf("issue %s: invalid IP address %v", name, ip)
		}
	}
	now := o.now()
	notAfter := now.Add(o.lifetime)
	if c.cert.NotAfter.Before(notAfter) {
		notAfter = c.cert.NotAfter
	}
	if !now.Before(notAfter) {
		return nil, fmt.Errorf("issue %s: the CA expired at %v", name, c.cert.NotAfter)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	id, err := url.Parse(SPIFFEID(name))
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Switchboard"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id},
		DNSNames:              dnsNames(name, o.dns),
		IPAddresses:           ipAddresses(o.ips),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	files := FilesIn(c.dir, name)
	// Key first, certificate last: a Source that reads in between sees a
	// mismatch, keeps what it has and retries when the certificate lands.
	if err := writeFile(files.Key, keyPEM, keyPerm); err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	if err := writeFile(files.Cert, encodeCertificates(cert), certPerm); err != nil {
		return nil, fmt.Errorf("issue %s: %w", name, err)
	}
	return cert, nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

func dnsNames(name string, extra []string) []string {
	names := []string{"localhost", name}
	for _, d := range extra {
		if !slices.Contains(names, d) {
			names = append(names, d)
		}
	}
	return names
}

func ipAddresses(extra []net.IP) []net.IP {
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, ip := range extra {
		if !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	return ips
}

// Action says what EnsureDevPKI did with a certificate.
type Action string

// The actions of EnsureDevPKI.
const (
	Created  Action = "created"  // there was none
	Reused   Action = "reused"   // the one there is good
	Reissued Action = "reissued" // the one there was replaced; Result.Reason says why
)

// Result reports what EnsureDevPKI did with one certificate.
type Result struct {
	// Name is the service name, or "ca" for the CA.
	Name string
	// CertFile and KeyFile are the certificate's files.
	CertFile, KeyFile string
	// Action is what was done.
	Action Action
	// Reason says why a certificate was reissued.
	Reason string
	// Certificate is the certificate now in CertFile (for the CA, the one
	// that signs).
	Certificate *x509.Certificate
}

// EnsureDevPKI makes dir hold a valid development PKI for services and the
// operator, doing only what is needed: it creates the CA if ca.pem is
// missing, and issues the certificate of every name (OperatorName is always
// added) that is missing, unusable, not signed by the current CA, lacking a
// SAN it should have, or has less than a third of its lifetime left. A CA
// with less than a third of its lifetime left is replaced by a new one,
// whose ca.pem keeps the old certificate as trusted until it expires, and
// every certificate is then reissued under the new CA. What is valid is
// reused, so a second call changes nothing and costs a few file reads per
// name.
//
// A ca.pem that cannot be used (no matching key, not a CA) is an error:
// EnsureDevPKI does not replace a CA that others may trust; remove the
// directory to start over. Options apply to what is created (WithLifetime,
// WithCALifetime, WithDNSNames and WithIPAddresses for every name) and
// WithClock to the expiry checks. The results list the CA first, then the
// names in order. Concurrent calls on one directory must be avoided.
func EnsureDevPKI(dir string, services []string, opts ...IssueOption) ([]Result, error) {
	var names []string
	for _, s := range append(slices.Clone(services), OperatorName) {
		if err := ValidateName(s); err != nil {
			return nil, fmt.Errorf("dev PKI: %w", err)
		}
		if !slices.Contains(names, s) {
			names = append(names, s)
		}
	}
	o := newIssueOptions(opts)
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("dev PKI: %w", err)
	}
	ca, res, err := ensureCA(dir, o)
	if err != nil {
		return nil, fmt.Errorf("dev PKI: %w", err)
	}
	results := []Result{res}
	for _, name := range names {
		files := FilesIn(dir, name)
		res := Result{Name: name, CertFile: files.Cert, KeyFile: files.Key, Action: Reused}
		var exists bool
		res.Reason, res.Certificate, exists = leafProblem(ca, name, o)
		if res.Reason != "" {
			res.Action = Reissued
			if !exists {
				res.Action, res.Reason = Created, ""
			}
			if res.Certificate, err = ca.Issue(name, opts...); err != nil {
				return nil, fmt.Errorf("dev PKI: %w", err)
			}
		}
		results = append(results, res)
	}
	return results, nil
}

func ensureCA(dir string, o issueOptions) (*CA, Result, error) {
	res := Result{Name: "ca", CertFile: filepath.Join(dir, CAFile), KeyFile: filepath.Join(dir, CAKeyFile)}
	if _, err := os.Lstat(res.CertFile); errors.Is(err, fs.ErrNotExist) {
		ca, err := createCA(dir, o, nil)
		if err != nil {
			return nil, res, err
		}
		res.Action, res.Certificate = Created, ca.cert
		return ca, res, nil
	}
	ca, err := LoadCA(dir)
	if err != nil {
		return nil, res, fmt.Errorf("%w (remove %s and %s to start a new development CA)", err, res.CertFile, res.KeyFile)
	}
	if reason := expiring(ca.cert, o.now()); reason != "" {
		next, err := createCA(dir, o, ca.bundle)
		if err != nil {
			return nil, res, err
		}
		res.Action, res.Reason, res.Certificate = Reissued, reason, next.cert
		return next, res, nil
	}
	res.Action, res.Certificate = Reused, ca.cert
	return ca, res, nil
}

// expiring says why cert must be renewed at now, or "" if it need not be.
func expiring(cert *x509.Certificate, now time.Time) string {
	left, life := cert.NotAfter.Sub(now), cert.NotAfter.Sub(cert.NotBefore)
	switch {
	case left <= 0:
		return fmt.Sprintf("expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	case 3*left < life:
		return fmt.Sprintf("expires at %s, less than a third of its lifetime left", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return ""
}

// leafProblem says why the certificate of name in ca's directory must be
// issued again, or "" if it is good; it returns the certificate it found,
// and whether the certificate file exists.
func leafProblem(ca *CA, name string, o issueOptions) (reason string, cert *x509.Certificate, exists bool) {
	files := FilesIn(ca.dir, name)
	certPEM, err := readFile(files.Cert)
	if errors.Is(err, fs.ErrNotExist) {
		return "missing", nil, false
	}
	if err != nil {
		return err.Error(), nil, true
	}
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return fmt.Sprintf("%s: %v", files.Cert, err), nil, true
	}
	cert = chain[0]
	keyPEM, err := readFile(files.Key)
	if err != nil {
		return err.Error(), cert, true
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return fmt.Sprintf("%s: %v", files.Key, err), cert, true
	}
	if !matches(key, cert) {
		return "key does not match the certificate", cert, true
	}
	now := o.now()
	if reason := expiring(cert, now); reason != "" {
		return reason, cert, true
	}
	if err := cert.CheckSignatureFrom(ca.cert); err != nil {
		return "not signed by the current CA", cert, true
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Sprintf("not valid under the current CA: %v", err), cert, true
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return "not usable as a client certificate", cert, true
	}
	if svc, err := ServiceFromCertificate(cert); err != nil || svc.Name != name {
		return fmt.Sprintf("identity is not %s", SPIFFEID(name)), cert, true
	}
	for _, d := range dnsNames(name, o.dns) {
		if !slices.Contains(cert.DNSNames, d) {
			return fmt.Sprintf("lacks DNS SAN %q", d), cert, true
		}
	}
	for _, ip := range ipAddresses(o.ips) {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return fmt.Sprintf("lacks IP SAN %v", ip), cert, true
		}
	}
	return "", cert, true
}
