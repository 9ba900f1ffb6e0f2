package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rpc/switchboard/internal/demo"
	"github.com/switchboard-rpc/switchboard/internal/system"
	"github.com/switchboard-rpc/switchboard/kit/ratelimit"
)

// TestDemoStory runs the demo's story through the gateway, streams
// included, against the whole system on embedded defaults: the order is
// delivered, notify's e-mails are listed and the audit chain verifies.
func TestDemoStory(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.CarrierStep = 20 * time.Millisecond
	cfg.Gateway = system.GatewayConfig{
		Addr:   "127.0.0.1:0",
		Limits: ratelimit.Limits{PerIdentity: ratelimit.Limit{Rate: 1e6, Burst: 1e6}},
	}
	s := start(t, cfg)
	if s.gatewayURL == "" {
		t.Fatal("the run has no gateway")
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := demo.Run(ctx, demo.Config{GatewayURL: s.gatewayURL, Audit: s.auditConn, Out: &out}); err != nil {
		t.Fatalf("demo = %v\n%s", err, out.String())
	}
	steps := strings.Count(out.String(), "✓")
	if steps != 9 {
		t.Errorf("demo passed %d steps, want 9:\n%s", steps, out.String())
	}
	for _, want := range []string{"CONFIRMED → SHIPPED → DELIVERED", "chained and intact", "Welcome to"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
