package system

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd/embedded"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
)

// runServices starts Run with services and returns their addresses; it
// stops the run when the test ends.
func runServices(t *testing.T, cfg Config, services []Service) map[string]string {
	t.Helper()
	run, err := Start(cfg, services, 30*time.Second)
	if err != nil {
		t.Fatalf("Start = %v", err)
	}
	t.Cleanup(func() {
		if err := run.Stop(20 * time.Second); err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return run.Addrs
}

func lookup(t *testing.T, names ...string) []Service {
	t.Helper()
	var out []Service
	for _, n := range names {
		s, ok := Lookup(n)
		if !ok {
			t.Fatalf("no service %s", n)
		}
		out = append(out, s)
	}
	return out
}

// TestGatewayReachesServicesThroughTheRegistryByCanaryPolicy runs three
// processes' worth of the system in one test, sharing one PKI and one
// etcd: identity with inventory v1, inventory v2, and a gateway alone. The
// gateway finds inventory through etcd and sends each call to the version
// the canary policy file picks; rewriting the file moves the traffic
// without a restart.
func TestGatewayReachesServicesThroughTheRegistryByCanaryPolicy(t *testing.T) {
	etcdSrv, err := embedded.Start(t.Context(), embedded.Config{Dir: filepath.Join(t.TempDir(), "etcd")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcdSrv.Close)
	pki := filepath.Join(t.TempDir(), "certs")
	names := []string{GatewayName}
	for _, s := range Services() {
		names = append(names, s.Name)
	}
	if _, err := certs.EnsureDevPKI(pki, names); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(t.TempDir(), "canary.yaml")
	writePolicy := func(doc string) {
		t.Helper()
		tmp := policy + ".tmp"
		if err := os.WriteFile(tmp, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, policy); err != nil {
			t.Fatal(err)
		}
	}
	writePolicy("inventory: {v1: 0, v2: 100}\n")

	// Each run in its own data directory sharing the PKI; inventory's
	// access log (every call, at debug) tells which version served.
	newRun := func(version string, logs io.Writer) Config {
		dir := t.TempDir()
		if err := os.Symlink(pki, filepath.Join(dir, "certs")); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(dir, &syncBuffer{})
		cfg.MetricsAddr = ""
		cfg.RegistryEndpoints = []string{etcdSrv.Endpoint()}
		cfg.RegistryTTL = 2 * time.Second
		cfg.Version = version
		cfg.CanaryPolicy = policy
		cfg.Limits = ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1e6, Burst: 1e6}}
		if logs != nil {
			cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		return cfg
	}
	v1Logs, v2Logs := &syncBuffer{}, &syncBuffer{}
	runServices(t, newRun("v1", v1Logs), lookup(t, "identity", "inventory"))
	runServices(t, newRun("v2", v2Logs), lookup(t, "inventory"))
	gw := newRun("", nil)
	gw.Gateway = GatewayConfig{Addr: "127.0.0.1:0", Limits: ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1e6, Burst: 1e6}}}
	gatewayURL := runServices(t, gw, nil)[GatewayName]
	served := func() (v1, v2 int) {
		count := func(b *syncBuffer) int {
			return strings.Count(b.String(), "/switchboard.inventory.v1.InventoryService/GetItem")
		}
		return count(v1Logs), count(v2Logs)
	}
	getItems := func(n int) {
		t.Helper()
		for range n {
			if code := getStatus(t, gatewayURL+"/v1/items/sku-mug"); code != http.StatusOK {
				t.Fatalf("GET /v1/items/sku-mug = %d, want 200", code)
			}
		}
	}

	// Until a version's replica is ready the balancer sends its share to
	// the others: warm both up, each pinned with the x-canary header,
	// which also shows the override reaches the balancer through the
	// gateway.
	for _, version := range []string{"v1", "v2"} {
		deadline := time.Now().Add(15 * time.Second)
		for {
			b1, b2 := served()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gatewayURL+"/v1/items/sku-mug", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Canary", version)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if a1, a2 := served(); (version == "v1" && a1 > b1) || (version == "v2" && a2 > b2) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no call reached %s within 15s", version)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	v1Before, v2Before := served()
	getItems(20)
	if v1, v2 := served(); v1 != v1Before || v2 != v2Before+20 {
		t.Fatalf("policy v2 100: v1 served %d, v2 served %d of 20, want 0 and 20", v1-v1Before, v2-v2Before)
	}

	writePolicy("inventory: {v1: 100, v2: 0}\n")
	deadline := time.Now().Add(15 * time.Second)
	for {
		v1Before, _ := served()
		getItems(1)
		if v1, _ := served(); v1 > v1Before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rewritten policy did not move the traffic to v1 within 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, v2Before = served()
	getItems(20)
	if _, v2 := served(); v2 != v2Before {
		t.Errorf("after the switch to v1 100, v2 served %d more calls, want 0", v2-v2Before)
	}
}
