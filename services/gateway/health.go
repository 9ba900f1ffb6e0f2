package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Readiness is the answer of /readyz.
type Readiness struct {
	// Ready is true when every service the gateway dials reports SERVING
	// and the gateway is not shutting down.
	Ready bool `json:"ready"`
	// Services maps each service the gateway dials to its health:
	// SERVING, NOT_SERVING, or UNREACHABLE when the check failed.
	Services map[string]string `json:"services"`
	// NotReady lists the services that are not SERVING, sorted.
	NotReady []string `json:"notReady,omitempty"`
}

// readiness caches the last checks, so that a flood of probes makes at
// most one round of health calls a second.
type readiness struct {
	mu   sync.Mutex
	last Readiness
	at   time.Time
}

// Ready checks, over grpc.health.v1, every service the gateway dials,
// concurrently and within a bounded time. A result younger than a second
// is reused.
func (g *Gateway) Ready(ctx context.Context) Readiness {
	g.ready.mu.Lock()
	defer g.ready.mu.Unlock()
	if !g.ready.at.IsZero() && time.Since(g.ready.at) < readyCacheFor {
		return g.ready.last
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	res := Readiness{Ready: true, Services: make(map[string]string, len(g.conns))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, conn := range g.conns {
		wg.Go(func() {
			state := "UNREACHABLE"
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err == nil {
				state = resp.GetStatus().String()
			}
			mu.Lock()
			defer mu.Unlock()
			res.Services[name] = state
			if state != healthpb.HealthCheckResponse_SERVING.String() {
				res.Ready = false
				res.NotReady = append(res.NotReady, name)
			}
		})
	}
	wg.Wait()
	slices.Sort(res.NotReady)
	g.ready.last, g.ready.at = res, time.Now()
	return res
}

// serveHealthz answers that the process is alive.
func (g *Gateway) serveHealthz(w http.ResponseWriter, r *http.Request) {
	if !g.onlyGet(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// serveReadyz answers 200 when every service is SERVING, else 503 with
// the list of those that are not.
func (g *Gateway) serveReadyz(w http.ResponseWriter, r *http.Request) {
	if !g.onlyGet(w, r) {
		return
	}
	res := g.Ready(r.Context())
	if g.draining.Load() {
		res.Ready = false
	}
	code := http.StatusOK
	if !res.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, res)
}

// serveOpenAPI serves the merged OpenAPI document, with HEAD, ranges and
// conditional requests by entity tag.
func (g *Gateway) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	if !g.onlyGet(w, r) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("ETag", g.openapi.etag)
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "openapi.json", time.Time{}, bytes.NewReader(g.openapi.body))
}

// onlyGet answers 405 to methods other than GET and HEAD.
func (g *Gateway) onlyGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	g.writeStatus(r.Context(), nil, w, status.New(codes.Unimplemented, Domain, ReasonMethodNotAllowed,
		"method "+r.Method+" not allowed here"), http.StatusMethodNotAllowed)
	return false
}

// writeJSON writes v as the JSON response.
func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"code":13,"message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
