package certs_test

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-rpc/switchboard/kit/certs"
)

// logBuffer collects log output from many goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// metrics gathers cs and returns every sample as "name{label=value,...}".
func metrics(t *testing.T, cs ...prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return got
}

// presented returns the certificate a new server handshake would present.
func presented(t *testing.T, src *certs.Source) *tls.Certificate {
	t.Helper()
	cfg, err := certs.ServerTLS(src).GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return &cfg.Certificates[0]
}

const interval = 20 * time.Millisecond

// waitInterval lets the reload interval pass.
func waitInterval() { time.Sleep(2 * interval) }

func TestReloadOverGRPC(t *testing.T) {
	dir, ca := devPKI(t, "greeter")
	var logs logBuffer
	src := source(t, dir, "greeter", certs.WithReloadInterval(interval), certs.WithLogger(logs.logger()))
	addr := serveGreeter(t, certs.ServerCredentials(src))
	creds := certs.ClientCredentials(source(t, dir, certs.OperatorName), "greeter")

	original := src.Leaf().SerialNumber
	first := dial(t, addr, creds)
	if serial, err := hello(t, first); err != nil || serial.Cmp(original) != 0 {
		t.Fatalf("first connection: serial %x, %v; want %x", serial, err, original)
	}

	// A copy caught half way: the server keeps its certificate.
	pemData, err := os.ReadFile(filepath.Join(dir, "greeter.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "greeter.pem"), pemData[:len(pemData)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	waitInterval()
	if serial, err := hello(t, dial(t, addr, creds)); err != nil || serial.Cmp(original) != 0 {
		t.Fatalf("connection during a broken file: serial %x, %v; want the old %x", serial, err, original)
	}
	if m := metrics(t, src.Collector()); m["switchboard_certificate_reload_errors_total{name=greeter}"] != 1 {
		t.Errorf("reload errors = %v, want 1", m)
	}
	if !strings.Contains(logs.String(), "certificate reload failed") {
		t.Errorf("log %q does not report the failed reload", logs.String())
	}

	// Reissued: new connections get the new certificate, without a
	// restart.
	reissued, err := ca.Issue("greeter")
	if err != nil {
		t.Fatal(err)
	}
	waitInterval()
	if serial, err := hello(t, dial(t, addr, creds)); err != nil || serial.Cmp(reissued.SerialNumber) != 0 {
		t.Fatalf("connection after reissue: serial %x, %v; want the new %x", serial, err, reissued.SerialNumber)
	}
	if got := src.Leaf().SerialNumber; got.Cmp(reissued.SerialNumber) != 0 {
		t.Errorf("Leaf serial = %x, want %x", got, reissued.SerialNumber)
	}
	// The connection opened before keeps working, with its certificate.
	if serial, err := hello(t, first); err != nil || serial.Cmp(original) != 0 {
		t.Errorf("first connection after reissue: serial %x, %v; want still %x", serial, err, original)
	}
	if !strings.Contains(logs.String(), "certificate reloaded") {
		t.Errorf("log %q does not report the reload", logs.String())
	}
}

func TestReloadFailureKeepsMaterial(t *testing.T) {
	otherDir, _ := devPKI(t, "greeter")
	write := func(name string, data func(dir string) []byte) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			t.Helper()
			if err := os.WriteFile(filepath.Join(dir, name), data(dir), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	file := func(dir, name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			panic(err)
		}
		return b
	}
	half := func(name string) func(string) []byte {
		return func(dir string) []byte { b := file(dir, name); return b[:len(b)/2] }
	}
	tests := []struct {
		name       string
		breakFiles func(*testing.T, string)
		wantErr    string
	}{
		{"garbage certificate", write("greeter.pem", func(string) []byte { return []byte("garbage\n") }), "not PEM"},
		{"half-written certificate", write("greeter.pem", half("greeter.pem")), "not PEM"},
		{"half-written key", write("greeter-key.pem", half("greeter-key.pem")), "greeter-key.pem"},
		{"key of another certificate", write("greeter-key.pem", func(dir string) []byte { return file(dir, "operator-key.pem") }),
			"private key does not match public key"},
		{"key missing", func(_ *testing.T, dir string) { _ = os.Remove(filepath.Join(dir, "greeter-key.pem")) }, "no such file"},
		{"half-written CA bundle", write("ca.pem", half("ca.pem")), "load CA bundle"},
		{"CA bundle without a CA", write("ca.pem", func(dir string) []byte { return file(dir, "operator.pem") }), "not a CA certificate"},
		{"certificate and key from another CA", func(t *testing.T, dir string) {
			write("greeter.pem", func(string) []byte { return file(otherDir, "greeter.pem") })(t, dir)
			write("greeter-key.pem", func(string) []byte { return file(otherDir, "greeter-key.pem") })(t, dir)
		}, "not valid under CA bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir, ca := devPKI(t, "greeter")
			saved := map[string][]byte{}
			for _, f := range []string{"greeter.pem", "greeter-key.pem", "ca.pem"} {
				saved[f] = file(dir, f)
			}
			var logs logBuffer
			src := source(t, dir, "greeter", certs.WithReloadInterval(interval), certs.WithLogger(logs.logger()))
			original := src.Leaf().SerialNumber
			errorsTotal := func() float64 {
				return metrics(t, src.Collector())["switchboard_certificate_reload_errors_total{name=greeter}"]
			}

			tt.breakFiles(t, dir)
			waitInterval()
			if got := presented(t, src).Leaf.SerialNumber; got.Cmp(original) != 0 {
				t.Fatalf("handshake after breaking presents serial %x, want the old %x", got, original)
			}
			if n := errorsTotal(); n != 1 {
				t.Errorf("reload errors = %v, want 1", n)
			}
			if !strings.Contains(logs.String(), tt.wantErr) {
				t.Errorf("log %q lacks %q", logs.String(), tt.wantErr)
			}
			// Unchanged broken files are not tried (and logged) again.
			waitInterval()
			presented(t, src)
			if n := errorsTotal(); n != 1 {
				t.Errorf("reload errors after another interval = %v, want still 1", n)
			}
			if err := src.Reload(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Reload = %v, want an error with %q", err, tt.wantErr)
			}

			// Fixed files are picked up.
			for f, b := range saved {
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			reissued, err := ca.Issue("greeter")
			if err != nil {
				t.Fatal(err)
			}
			waitInterval()
			if got := presented(t, src).Leaf.SerialNumber; got.Cmp(reissued.SerialNumber) != 0 {
				t.Errorf("handshake after the fix presents serial %x, want %x", got, reissued.SerialNumber)
			}
		})
	}
}

func TestReloadIntervalOff(t *testing.T) {
	dir, ca := devPKI(t, "greeter")
	src := source(t, dir, "greeter", certs.WithReloadInterval(0))
	original := src.Leaf().SerialNumber
	reissued, err := ca.Issue("greeter")
	if err != nil {
		t.Fatal(err)
	}
	waitInterval()
	if got := presented(t, src).Leaf.SerialNumber; got.Cmp(original) != 0 {
		t.Errorf("with reloading off, handshake presents %x, want the old %x", got, original)
	}
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := presented(t, src).Leaf.SerialNumber; got.Cmp(reissued.SerialNumber) != 0 {
		t.Errorf("after Reload, handshake presents %x, want %x", got, reissued.SerialNumber)
	}
}

func TestClientReload(t *testing.T) {
	dir, ca := devPKI(t)
	src := source(t, dir, certs.OperatorName, certs.WithReloadInterval(interval))
	cfg := certs.ClientTLS(src, "greeter")
	reissued, err := ca.Issue(certs.OperatorName)
	if err != nil {
		t.Fatal(err)
	}
	waitInterval()
	got, err := cfg.GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Leaf.SerialNumber.Cmp(reissued.SerialNumber) != 0 {
		t.Errorf("client presents %x after reissue, want %x", got.Leaf.SerialNumber, reissued.SerialNumber)
	}
}

// TestConcurrentReload races handshakes against reloads (run with -race).
func TestConcurrentReload(t *testing.T) {
	dir, ca := devPKI(t, "greeter")
	src := source(t, dir, "greeter", certs.WithReloadInterval(time.Millisecond))
	server, client := certs.ServerTLS(src), certs.ClientTLS(src, "greeter")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cfg, err := server.GetConfigForClient(&tls.ClientHelloInfo{})
				if err != nil || cfg.Certificates[0].Leaf == nil {
					t.Errorf("GetConfigForClient = %v", err)
					return
				}
				if _, err := client.GetClientCertificate(&tls.CertificateRequestInfo{}); err != nil {
					t.Errorf("GetClientCertificate = %v", err)
					return
				}
			}
		})
	}
	for range 5 {
		if _, err := ca.Issue("greeter"); err != nil {
			t.Error(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
}

func TestExpiryGauge(t *testing.T) {
	dir, ca := devPKI(t, "greeter")
	greeter := source(t, dir, "greeter")
	operator := source(t, dir, certs.OperatorName, certs.WithName("grpcurl"))
	leafOf := func(name string) float64 {
		return float64(readCert(t, filepath.Join(dir, name+".pem")).NotAfter.Unix())
	}
	caExpiry := float64(ca.Certificate().NotAfter.Unix())

	got := metrics(t, greeter.Collector(), operator.Collector())
	want := map[string]float64{
		"switchboard_certificate_expiry_timestamp_seconds{kind=leaf,name=greeter}": leafOf("greeter"),
		"switchboard_certificate_expiry_timestamp_seconds{kind=ca,name=greeter}":   caExpiry,
		"switchboard_certificate_expiry_timestamp_seconds{kind=leaf,name=grpcurl}": leafOf("operator"),
		"switchboard_certificate_expiry_timestamp_seconds{kind=ca,name=grpcurl}":   caExpiry,
		"switchboard_certificate_reloads_total{name=greeter}":                      0,
		"switchboard_certificate_reload_errors_total{name=greeter}":                0,
		"switchboard_certificate_reloads_total{name=grpcurl}":                      0,
		"switchboard_certificate_reload_errors_total{name=grpcurl}":                0,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("gathered %v, want %d samples", got, len(want))
	}

	reissued, err := ca.Issue("greeter", certs.WithLifetime(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := greeter.Reload(); err != nil {
		t.Fatal(err)
	}
	got = metrics(t, greeter.Collector())
	if k, v := "switchboard_certificate_expiry_timestamp_seconds{kind=leaf,name=greeter}", float64(reissued.NotAfter.Unix()); got[k] != v {
		t.Errorf("after reload %s = %v, want %v", k, got[k], v)
	}
	if k := "switchboard_certificate_reloads_total{name=greeter}"; got[k] != 1 {
		t.Errorf("after reload %s = %v, want 1", k, got[k])
	}
}

func TestNewSourceErrors(t *testing.T) {
	dir, ca := devPKI(t, "greeter")
	otherDir, _ := devPKI(t)
	if _, err := ca.Issue("expired", certs.WithClock(func() time.Time { return time.Now().Add(-30 * 24 * time.Hour) })); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		files   certs.Files
		wantErr string
	}{
		{"no files", certs.FilesIn(t.TempDir(), "greeter"), "no such file"},
		{"key of another certificate", certs.Files{
			Cert: filepath.Join(dir, "greeter.pem"), Key: filepath.Join(dir, "operator-key.pem"), CA: filepath.Join(dir, "ca.pem"),
		}, "private key does not match"},
		{"another CA", certs.Files{
			Cert: filepath.Join(dir, "greeter.pem"), Key: filepath.Join(dir, "greeter-key.pem"), CA: filepath.Join(otherDir, "ca.pem"),
		}, "certificate signed by unknown authority"},
		{"expired", certs.FilesIn(dir, "expired"), "expired"},
		{"key as certificate", certs.Files{
			Cert: filepath.Join(dir, "greeter-key.pem"), Key: filepath.Join(dir, "greeter-key.pem"), CA: filepath.Join(dir, "ca.pem"),
		}, "want a CERTIFICATE"},
	}
	for _, tt := range tests {
		if _, err := certs.NewSource(tt.files); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("NewSource(%s) = %v, want an error with %q", tt.name, err, tt.wantErr)
		}
	}
	src := source(t, dir, "greeter")
	if src.Name() != "greeter" {
		t.Errorf("Name() = %q, want greeter", src.Name())
	}
}
