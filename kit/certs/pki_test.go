package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rpc/switchboard/kit/certs"
)

func TestValidateName(t *testing.T) {
	for _, name := range []string{"a", "order", "order-v2", "9", strings.Repeat("x", 63)} {
		if err := certs.ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", strings.Repeat("x", 64), "Order", "-a", "a-", "a_b", "a.b", "a/b", "über", "ca"} {
		if err := certs.ValidateName(name); !errors.Is(err, certs.ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	if _, err := certs.EnsureDevPKI(t.TempDir(), []string{"order", "Bad"}); !errors.Is(err, certs.ErrInvalidName) {
		t.Errorf("EnsureDevPKI with a bad name = %v, want ErrInvalidName", err)
	}
}

func TestIssue(t *testing.T) {
	dir, ca := devPKI(t)
	before := time.Now()
	cert, err := ca.Issue("order",
		certs.WithDNSNames("order.shop.internal", "localhost"),
		certs.WithIPAddresses(net.ParseIP("10.0.0.7"), net.ParseIP("127.0.0.1")),
		certs.WithLifetime(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if onDisk := readCert(t, filepath.Join(dir, "order.pem")); !onDisk.Equal(cert) {
		t.Error("order.pem does not hold the certificate Issue returned")
	}
	if got := cert.URIs; len(got) != 1 || got[0].String() != "spiffe://switchboard.local/order" {
		t.Errorf("URIs = %v, want [spiffe://switchboard.local/order]", got)
	}
	if got, want := cert.DNSNames, []string{"localhost", "order", "order.shop.internal"}; !slices.Equal(got, want) {
		t.Errorf("DNSNames = %v, want %v", got, want)
	}
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1", "10.0.0.7"}; !slices.Equal(ips, want) {
		t.Errorf("IPAddresses = %v, want %v", ips, want)
	}
	if want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !slices.Equal(cert.ExtKeyUsage, want) {
		t.Errorf("ExtKeyUsage = %v, want server and client", cert.ExtKeyUsage)
	}
	if cert.IsCA || cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("IsCA = %v, KeyUsage = %v, want a leaf for signatures", cert.IsCA, cert.KeyUsage)
	}
	if k, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", cert.PublicKey)
	}
	if life := cert.NotAfter.Sub(before); life < 48*time.Hour-time.Minute || life > 48*time.Hour+time.Minute {
		t.Errorf("lifetime from now = %v, want 48h", life)
	}
	if err := cert.CheckSignatureFrom(ca.Certificate()); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}

	for _, bad := range []struct {
		name string
		opts []certs.IssueOption
	}{
		{"Order", nil},
		{"ca", nil},
		{"order", []certs.IssueOption{certs.WithLifetime(0)}},
		{"order", []certs.IssueOption{certs.WithDNSNames("")}},
		{"order", []certs.IssueOption{certs.WithIPAddresses(net.IP{1, 2})}},
		{"order", []certs.IssueOption{certs.WithClock(func() time.Time { return time.Now().Add(2 * certs.DefaultCALifetime) })}},
	} {
		if _, err := ca.Issue(bad.name, bad.opts...); err == nil {
			t.Errorf("Issue(%q, %d options) succeeded, want an error", bad.name, len(bad.opts))
		}
	}
}

func TestEnsureDevPKI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "certs")
	services := []string{"greeter", "order", "order", certs.OperatorName}
	first, err := certs.EnsureDevPKI(dir, services)
	if err != nil {
		t.Fatal(err)
	}
	wantNames := []string{"ca", "greeter", "order", certs.OperatorName}
	var names []string
	for _, r := range first {
		names = append(names, r.Name)
		if r.Action != certs.Created {
			t.Errorf("first run: %s %s, want created", r.Name, r.Action)
		}
	}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("first run names = %v, want %v", names, wantNames)
	}

	// Lifetimes and files.
	ca := first[0].Certificate
	if life := ca.NotAfter.Sub(ca.NotBefore); life < certs.DefaultCALifetime || life > certs.DefaultCALifetime+time.Hour {
		t.Errorf("CA lifetime = %v, want about %v", life, certs.DefaultCALifetime)
	}
	if !ca.IsCA || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate IsCA=%v MaxPathLenZero=%v KeyUsage=%v", ca.IsCA, ca.MaxPathLenZero, ca.KeyUsage)
	}
	for _, r := range first[1:] {
		if life := r.Certificate.NotAfter.Sub(r.Certificate.NotBefore); life < certs.DefaultLifetime || life > certs.DefaultLifetime+time.Hour {
			t.Errorf("%s lifetime = %v, want about %v", r.Name, life, certs.DefaultLifetime)
		}
	}
	if runtime.GOOS != "windows" {
		for _, f := range []string{"ca-key.pem", "greeter-key.pem", "order-key.pem", "operator-key.pem"} {
			if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v (%v), want 0600", f, fi.Mode().Perm(), err)
			}
		}
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
		}
	}
	snapshot := func() map[string][]byte {
		files := map[string][]byte{}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[e.Name()] = b
		}
		return files
	}
	before := snapshot()
	if len(before) != 8 {
		t.Errorf("directory holds %d files, want 8: %v", len(before), slices.Sorted(func(yield func(string) bool) {
			for k := range before {
				if !yield(k) {
					return
				}
			}
		}))
	}

	second, err := certs.EnsureDevPKI(dir, services)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range second {
		if r.Action != certs.Reused || r.Certificate.SerialNumber.Cmp(first[i].Certificate.SerialNumber) != 0 {
			t.Errorf("second run: %s %s serial %x, want reused serial %x", r.Name, r.Action, r.Certificate.SerialNumber, first[i].Certificate.SerialNumber)
		}
	}
	after := snapshot()
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("second run changed %s", name)
		}
	}
}

func TestEnsureDevPKIReissues(t *testing.T) {
	now := time.Now()
	daysAgo := func(d int) certs.IssueOption {
		return certs.WithClock(func() time.Time { return now.Add(-time.Duration(d) * 24 * time.Hour) })
	}
	copyFile := func(t *testing.T, from, to string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	otherDir, _ := devPKI(t, "order")
	tests := []struct {
		name       string
		change     func(t *testing.T, dir string, ca *certs.CA)
		opts       []certs.IssueOption
		wantAction certs.Action
		wantReason string
	}{
		{"close to expiry", func(t *testing.T, _ string, ca *certs.CA) {
			if _, err := ca.Issue("order", daysAgo(5)); err != nil {
				t.Fatal(err)
			}
		}, nil, certs.Reissued, "less than a third of its lifetime left"},
		{"expired", func(t *testing.T, _ string, ca *certs.CA) {
			if _, err := ca.Issue("order", daysAgo(30)); err != nil {
				t.Fatal(err)
			}
		}, nil, certs.Reissued, "expired at"},
		{"certificate missing", func(_ *testing.T, dir string, _ *certs.CA) {
			_ = os.Remove(filepath.Join(dir, "order.pem"))
		}, nil, certs.Created, ""},
		{"key missing", func(_ *testing.T, dir string, _ *certs.CA) {
			_ = os.Remove(filepath.Join(dir, "order-key.pem"))
		}, nil, certs.Reissued, "no such file"},
		{"key of another certificate", func(t *testing.T, dir string, _ *certs.CA) {
			copyFile(t, filepath.Join(dir, "greeter-key.pem"), filepath.Join(dir, "order-key.pem"))
		}, nil, certs.Reissued, "key does not match"},
		{"garbage certificate", func(t *testing.T, dir string, _ *certs.CA) {
			if err := os.WriteFile(filepath.Join(dir, "order.pem"), []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, nil, certs.Reissued, "not PEM"},
		{"signed by another CA", func(t *testing.T, dir string, _ *certs.CA) {
			copyFile(t, filepath.Join(otherDir, "order.pem"), filepath.Join(dir, "order.pem"))
			copyFile(t, filepath.Join(otherDir, "order-key.pem"), filepath.Join(dir, "order-key.pem"))
		}, nil, certs.Reissued, "not signed by the current CA"},
		{"another identity", func(t *testing.T, dir string, _ *certs.CA) {
			copyFile(t, filepath.Join(dir, "greeter.pem"), filepath.Join(dir, "order.pem"))
			copyFile(t, filepath.Join(dir, "greeter-key.pem"), filepath.Join(dir, "order-key.pem"))
		}, nil, certs.Reissued, "identity is not spiffe://switchboard.local/order"},
		{"lacks a SAN now asked for", func(*testing.T, string, *certs.CA) {},
			[]certs.IssueOption{certs.WithDNSNames("shop.example")}, certs.Reissued, `lacks DNS SAN "shop.example"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, ca := devPKI(t, "greeter", "order")
			tt.change(t, dir, ca)
			results, err := certs.EnsureDevPKI(dir, []string{"greeter", "order"}, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range results {
				switch r.Name {
				case "order":
					if r.Action != tt.wantAction || !strings.Contains(r.Reason, tt.wantReason) {
						t.Errorf("order: %s (%s), want %s (%s)", r.Action, r.Reason, tt.wantAction, tt.wantReason)
					}
				case "ca":
					if r.Action != certs.Reused {
						t.Errorf("ca: %s, want reused", r.Action)
					}
				}
			}
			again, err := certs.EnsureDevPKI(dir, []string{"greeter", "order"}, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range again {
				if r.Action != certs.Reused {
					t.Errorf("run after the fix: %s %s (%s), want reused", r.Name, r.Action, r.Reason)
				}
			}
		})
	}
}

func TestEnsureDevPKIRotatesCA(t *testing.T) {
	dir, old := devPKI(t, "order")
	later := certs.WithClock(func() time.Time { return time.Now().Add(250 * 24 * time.Hour) })
	results, err := certs.EnsureDevPKI(dir, []string{"order"}, later)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Action != certs.Reissued {
			t.Errorf("%s: %s, want reissued", r.Name, r.Action)
		}
	}
	if !strings.Contains(results[0].Reason, "less than a third") {
		t.Errorf("CA reissued because %q, want less than a third left", results[0].Reason)
	}
	data, err := os.ReadFile(filepath.Join(dir, certs.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Errorf("ca.pem holds %d certificates, want the new CA and the old one", n)
	}
	ca, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Certificate().Equal(old.Certificate()) || !ca.Certificate().Equal(results[0].Certificate) {
		t.Error("LoadCA after rotation does not return the new CA")
	}
	if err := readCert(t, filepath.Join(dir, "order.pem")).CheckSignatureFrom(ca.Certificate()); err != nil {
		t.Errorf("order.pem not signed by the new CA: %v", err)
	}
}

func TestEnsureDevPKIBrokenCA(t *testing.T) {
	tests := []struct {
		name    string
		change  func(dir string) error
		wantErr bool
	}{
		{"garbage ca.pem", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, certs.CAFile), []byte("garbage"), 0o600)
		}, true},
		{"key missing", func(dir string) error { return os.Remove(filepath.Join(dir, certs.CAKeyFile)) }, true},
		{"key of a leaf", func(dir string) error {
			return os.Rename(filepath.Join(dir, "operator-key.pem"), filepath.Join(dir, certs.CAKeyFile))
		}, true},
		{"ca.pem missing: a new CA", func(dir string) error { return os.Remove(filepath.Join(dir, certs.CAFile)) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := devPKI(t)
			if err := tt.change(dir); err != nil {
				t.Fatal(err)
			}
			results, err := certs.EnsureDevPKI(dir, nil)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "remove") {
					t.Errorf("EnsureDevPKI = %v, want an error that says to remove the CA", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if results[0].Action != certs.Created || results[1].Action != certs.Reissued {
				t.Errorf("ca %s, operator %s; want created, reissued", results[0].Action, results[1].Action)
			}
		})
	}
}

func TestCreateCARefusesToReplace(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.CreateCA(dir, certs.WithCALifetime(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.CreateCA(dir); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second CreateCA = %v, want fs.ErrExist", err)
	}
	ca, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if life := ca.Certificate().NotAfter.Sub(ca.Certificate().NotBefore); life > 25*time.Hour {
		t.Errorf("CA lifetime %v, want the 24h asked for", life)
	}
	if _, err := certs.LoadCA(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadCA of an empty directory = %v, want fs.ErrNotExist", err)
	}
}

func BenchmarkEnsureDevPKIReuse(b *testing.B) {
	dir := b.TempDir()
	services := []string{"identity", "inventory", "payment", "order", "shipping", "notify", "audit", "gateway"}
	if _, err := certs.EnsureDevPKI(dir, services); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := certs.EnsureDevPKI(dir, services); err != nil {
			b.Fatal(err)
		}
	}
}
