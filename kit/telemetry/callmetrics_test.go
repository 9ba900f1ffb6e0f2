package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/stats/opentelemetry"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
)

// instrumentation returns the options that record the gRFC A66 metrics of
// a server and a client to mp.
type instrumentation func(t testing.TB, mp metric.MeterProvider) ([]grpc.ServerOption, []grpc.DialOption)

// grpcPlugin is grpc-go's own OpenTelemetry plugin with its default metrics.
func grpcPlugin(_ testing.TB, mp metric.MeterProvider) ([]grpc.ServerOption, []grpc.DialOption) {
	o := opentelemetry.Options{MetricsOptions: opentelemetry.MetricsOptions{MeterProvider: mp}}
	return []grpc.ServerOption{opentelemetry.ServerOption(o)}, []grpc.DialOption{opentelemetry.DialOption(o)}
}

// kitHandler is the kit's handler, as Telemetry installs it.
func kitHandler(t testing.TB, mp metric.MeterProvider) ([]grpc.ServerOption, []grpc.DialOption) {
	t.Helper()
	srv, err := newCallMetrics(mp, SideServer)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := newCallMetrics(mp, SideClient)
	if err != nil {
		t.Fatal(err)
	}
	return []grpc.ServerOption{grpc.StatsHandler(srv)}, cli.dialOptions()
}

// kitInterceptors is the kit's interceptor mode, as Telemetry installs it
// when it exports no spans.
func kitInterceptors(t testing.TB, mp metric.MeterProvider) ([]grpc.ServerOption, []grpc.DialOption) {
	t.Helper()
	srv, err := newCallMetrics(mp, SideServer)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := newCallMetrics(mp, SideClient)
	if err != nil {
		t.Fatal(err)
	}
	return srv.interceptorServerOptions(), cli.interceptorDialOptions()
}

// retryConfig retries SayHello on UNAVAILABLE, so that a call has several
// attempts.
const retryConfig = `{"methodConfig": [{
	"name": [{"service": "switchboard.greeter.v1.Greeter", "method": "SayHello"}],
	"retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.001s", "maxBackoff": "0.002s",
		"backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
}]}`

// unregistered is a method the test server does not serve.
const unregistered = "/no.such.Service/Method"

// Numbers of calls in conformanceTraffic.
const (
	trafficRetryAttempts  = 3                                                           // of the one call retried on UNAVAILABLE
	trafficServerCalls    = 3 + 16 + 2 /* extra Unavailable attempts */ + 3 + 2 + 1 + 1 // calls that reach a handler
	trafficServerUnserved = 1                                                           // calls of an unregistered method
	trafficClientCalls    = 3 + 16 + 3 + 2 + 1 + 1 + 1
)

// conformanceTraffic makes unary calls ending with every status code (one
// of them retried), server, client and bidirectional streams, a generic
// call without grpc.StaticMethod and a call of a method the server does not
// serve.
func conformanceTraffic(t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	ctx := testContext(t)
	client := greeterv1.NewGreeterClient(cc)
	for range 3 {
		if _, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ann"}); err != nil {
			t.Fatalf("SayHello: %v", err)
		}
	}
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		_, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "code:" + c.String()})
		if status.Code(err) != c {
			t.Fatalf("SayHello(code:%s) = %v", c, err)
		}
	}
	for i, name := range []string{"bob", "carl", "code:PermissionDenied"} {
		stream, err := client.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: name, Count: 4, PaddingBytes: int32(1500 * i)})
		if err != nil {
			t.Fatalf("StreamGreetings: %v", err)
		}
		for {
			if _, err = stream.Recv(); err != nil {
				break
			}
		}
		if i == 2 {
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("StreamGreetings(%s) = %v, want PermissionDenied", name, err)
			}
		} else if !errors.Is(err, io.EOF) {
			t.Fatalf("StreamGreetings(%s) = %v, want EOF", name, err)
		}
	}
	for range 2 {
		collect, err := client.CollectNames(ctx)
		if err != nil {
			t.Fatalf("CollectNames: %v", err)
		}
		for _, n := range []string{"a", "b", "c"} {
			if err := collect.Send(&greeterv1.CollectNamesRequest{Name: n}); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		if _, err := collect.CloseAndRecv(); err != nil {
			t.Fatalf("CloseAndRecv: %v", err)
		}
	}
	chat, err := client.Chat(ctx)
	if err != nil {
		t.Fatalf("Chat: %v", err)
	}
	for _, n := range []string{"x", "y"} {
		if err := chat.Send(&greeterv1.ChatRequest{Name: n}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		if _, err := chat.Recv(); err != nil {
			t.Fatalf("Recv: %v", err)
		}
	}
	if err := chat.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if _, err := chat.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend = %v, want EOF", err)
	}
	// Generic: no grpc.StaticMethod, so the client says "other".
	if err := cc.Invoke(ctx, "/"+sayHello, &greeterv1.SayHelloRequest{Name: "generic"}, &greeterv1.SayHelloResponse{}); err != nil {
		t.Fatalf("Invoke SayHello: %v", err)
	}
	// Unregistered: the server says "other".
	err = cc.Invoke(ctx, unregistered, &greeterv1.SayHelloRequest{}, &greeterv1.SayHelloResponse{}, grpc.StaticMethod())
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Invoke unregistered = %v, want Unimplemented", err)
	}
}

// seriesShape is what the conformance test compares of a series: a
// counter's value, or a histogram's bucket bounds, count and (for sizes,
// which do not vary between runs) sum and bucket counts.
type seriesShape struct {
	Value        float64
	Count        uint64
	Sum          float64
	Bounds       []float64
	BucketCounts []uint64
}

type familyShape struct {
	Type   string
	Help   string
	Series map[string]seriesShape // by label set, name=value sorted
}

// shapes returns the shape of the grpc_* families of reg, with target
// replaced by TARGET in label values.
func shapes(t testing.TB, reg *prometheus.Registry, target string) map[string]familyShape {
	t.Helper()
	families := scrape(t, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	out := map[string]familyShape{}
	for name, f := range families {
		if !strings.HasPrefix(name, "grpc_") {
			continue
		}
		fs := familyShape{Type: f.GetType().String(), Help: f.GetHelp(), Series: map[string]seriesShape{}}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+strings.ReplaceAll(l.GetValue(), target, "TARGET"))
			}
			sort.Strings(labels)
			key := strings.Join(labels, ",")
			// grpc-go now and then ends the attempt of a call answered by
			// a status alone (here Unimplemented) with a nil error, which
			// the plugin and the kit both record as OK.
			if strings.HasPrefix(name, "grpc_client_attempt_") && strings.Contains(key, "grpc_method="+unregistered[1:]+",") {
				key = strings.Replace(key, "grpc_status=OK,", "grpc_status=UNIMPLEMENTED,", 1)
			}
			if prev, dup := fs.Series[key]; dup {
				fs.Series[key] = mergeSeries(prev, seriesOf(name, m))
				continue
			}
			fs.Series[key] = seriesOf(name, m)
		}
		out[name] = fs
	}
	return out
}

func seriesOf(name string, m *dto.Metric) seriesShape {
	if h := m.GetHistogram(); h != nil {
		s := seriesShape{Count: h.GetSampleCount()}
		for _, b := range h.GetBucket() {
			s.Bounds = append(s.Bounds, b.GetUpperBound())
			s.BucketCounts = append(s.BucketCounts, b.GetCumulativeCount())
		}
		if strings.Contains(name, "duration") {
			s.BucketCounts = nil // Latencies differ between runs.
		} else {
			s.Sum = h.GetSampleSum()
		}
		return s
	}
	return seriesShape{Value: metricValue(m)}
}

// mergeSeries adds up two series of the same family.
func mergeSeries(a, b seriesShape) seriesShape {
	a.Value += b.Value
	a.Count += b.Count
	a.Sum += b.Sum
	for i := range a.BucketCounts {
		a.BucketCounts[i] += b.BucketCounts[i]
	}
	return a
}

// total returns the sum over the series of family name of their values or
// counts.
func total(fs map[string]familyShape, name string) float64 {
	var n float64
	for _, s := range fs[name].Series {
		n += s.Value + float64(s.Count)
	}
	return n
}

// runConformance serves conformanceTraffic instrumented by inst into a
// registry of its own and returns the shapes of its grpc_* families and
// the families themselves.
func runConformance(t *testing.T, inst instrumentation, want map[string]float64) map[string]familyShape {
	t.Helper()
	reg := prometheus.NewRegistry()
	mp, err := newMeterProvider(reg, resource.Empty())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mp.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	srvOpts, dialOpts := inst(t, mp)
	cc := startGreeterConn(t, &greeter{}, srvOpts, append(dialOpts, grpc.WithDefaultServiceConfig(retryConfig)))
	conformanceTraffic(t, cc)

	var got map[string]familyShape
	eventually(t, func() string {
		got = shapes(t, reg, cc.CanonicalTarget())
		// The sizes are recorded after the durations: wait for them too.
		for name, want := range want {
			if n := total(got, name); n != want {
				return fmt.Sprintf("%s totals %v, want %v", name, n, want)
			}
		}
		return ""
	})
	return got
}

// statsTotals are the series totals of conformanceTraffic as grpc-go's
// plugin, and the kit's stats handlers, record them.
var statsTotals = map[string]float64{
	"grpc_server_call_started_total":                               trafficServerCalls + trafficServerUnserved,
	"grpc_server_call_duration_seconds":                            trafficServerCalls,
	"grpc_server_call_sent_total_compressed_message_size_bytes":    trafficServerCalls,
	"grpc_server_call_rcvd_total_compressed_message_size_bytes":    trafficServerCalls,
	"grpc_client_attempt_started_total":                            trafficServerCalls + trafficServerUnserved,
	"grpc_client_attempt_duration_seconds":                         trafficServerCalls + trafficServerUnserved,
	"grpc_client_attempt_sent_total_compressed_message_size_bytes": trafficServerCalls + trafficServerUnserved,
	"grpc_client_attempt_rcvd_total_compressed_message_size_bytes": trafficServerCalls + trafficServerUnserved,
	"grpc_client_call_duration_seconds":                            trafficClientCalls,
}

// interceptorTotals are those of the interceptor mode: the server does not
// see the call of a method it does not serve, and the client counts each
// call as one attempt.
var interceptorTotals = map[string]float64{
	"grpc_server_call_started_total":                               trafficServerCalls,
	"grpc_server_call_duration_seconds":                            trafficServerCalls,
	"grpc_server_call_sent_total_compressed_message_size_bytes":    trafficServerCalls,
	"grpc_server_call_rcvd_total_compressed_message_size_bytes":    trafficServerCalls,
	"grpc_client_attempt_started_total":                            trafficClientCalls,
	"grpc_client_attempt_duration_seconds":                         trafficClientCalls,
	"grpc_client_attempt_sent_total_compressed_message_size_bytes": trafficClientCalls,
	"grpc_client_attempt_rcvd_total_compressed_message_size_bytes": trafficClientCalls,
	"grpc_client_call_duration_seconds":                            trafficClientCalls,
}

// hasLabels reports whether a series key (name=value pairs joined by
// commas) has every pair of want, also comma-joined.
func hasLabels(key, want string) bool {
	for _, kv := range strings.Split(want, ",") {
		if !strings.Contains(","+key+",", ","+kv+",") {
			return false
		}
	}
	return true
}

// interceptorPromise turns what grpc-go's plugin exports for
// conformanceTraffic into what the interceptor mode promises to export
// (see the package documentation): the same families, help, labels, bucket
// bounds and, for uncompressed messages, sizes, except that the server does
// not count the call of a method it does not serve, and the call retried on
// UNAVAILABLE is one client attempt, not three.
func interceptorPromise(plugin map[string]familyShape) map[string]familyShape {
	out := map[string]familyShape{}
	retried := "grpc_method=" + sayHello + ",grpc_status=UNAVAILABLE"
	for name, f := range plugin {
		g := familyShape{Type: f.Type, Help: f.Help, Series: map[string]seriesShape{}}
		for key, s := range f.Series {
			switch {
			case name == "grpc_server_call_started_total" && hasLabels(key, "grpc_method="+OtherMethod):
				continue
			case name == "grpc_client_attempt_started_total" && hasLabels(key, "grpc_method="+sayHello):
				s.Value -= trafficRetryAttempts - 1
			case strings.HasPrefix(name, "grpc_client_attempt_") && hasLabels(key, retried):
				s.Count /= trafficRetryAttempts
				s.Sum /= trafficRetryAttempts
				s.BucketCounts = slices.Clone(s.BucketCounts)
				for i := range s.BucketCounts {
					s.BucketCounts[i] /= trafficRetryAttempts
				}
			}
			g.Series[key] = s
		}
		out[name] = g
	}
	return out
}

// TestA66Conformance checks that the kit's handler exports what grpc-go's
// OpenTelemetry plugin does, through the Prometheus exporter as Telemetry
// configures it: the same families with the same types, help, label names
// and values, bucket bounds, counts, and message size sums.
func TestA66Conformance(t *testing.T) {
	var want, got map[string]familyShape
	t.Run("grpc-go", func(t *testing.T) { want = runConformance(t, grpcPlugin, statsTotals) })
	t.Run("kit", func(t *testing.T) { got = runConformance(t, kitHandler, statsTotals) })
	if want == nil || got == nil {
		t.FailNow()
	}
	if len(want) != 9 {
		t.Errorf("grpc-go's plugin exported %d grpc_* families, want 9 (4 server, 5 client)", len(want))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("kit's A66 metrics differ from grpc-go's (-grpc-go +kit):\n%s", diff)
	}

	// Spot checks of the rules both follow.
	for _, c := range []struct {
		family, series string
		want           float64
	}{
		// A method the server does not serve is "other" and only started.
		{"grpc_server_call_started_total", "grpc_method=other", 1},
		{"grpc_server_call_started_total", "grpc_method=" + sayHello, 3 + 16 + 2 + 1},
		// A generic client call is "other".
		{"grpc_client_call_duration_seconds", "grpc_method=other,grpc_status=OK", 1},
		// A retried call: one call, three attempts.
		{"grpc_client_call_duration_seconds", "grpc_method=" + sayHello + ",grpc_status=UNAVAILABLE", 1},
		{"grpc_client_attempt_duration_seconds", "grpc_method=" + sayHello + ",grpc_status=UNAVAILABLE", 3},
		{"grpc_server_call_duration_seconds", "grpc_method=" + sayHello + ",grpc_status=UNAVAILABLE", 3},
		{"grpc_server_call_duration_seconds", "grpc_method=" + streamGreetings + ",grpc_status=PERMISSION_DENIED", 1},
	} {
		if n, found := seriesTotal(got, c.family, c.series); !found || n != c.want {
			t.Errorf("%s{%s} = %v (found %v), want %v", c.family, c.series, n, found, c.want)
		}
	}
}

// seriesTotal adds up the values or counts of the series of family whose
// labels include series (comma-joined name=value pairs).
func seriesTotal(fs map[string]familyShape, family, series string) (n float64, found bool) {
	for key, s := range fs[family].Series {
		if hasLabels(key, series) {
			found = true
			n += s.Value + float64(s.Count)
		}
	}
	return n, found
}

// TestA66ConformanceInterceptors checks that the interceptor mode exports
// what grpc-go's plugin does, but for the differences the package
// documentation promises (interceptorPromise): the same families, types,
// help, labels, bucket bounds, counts and message size sums.
func TestA66ConformanceInterceptors(t *testing.T) {
	var plugin, got map[string]familyShape
	t.Run("grpc-go", func(t *testing.T) { plugin = runConformance(t, grpcPlugin, statsTotals) })
	t.Run("kit", func(t *testing.T) { got = runConformance(t, kitInterceptors, interceptorTotals) })
	if plugin == nil || got == nil {
		t.FailNow()
	}
	if diff := cmp.Diff(interceptorPromise(plugin), got); diff != "" {
		t.Errorf("interceptor mode's A66 metrics differ from what it promises (-promised +kit):\n%s", diff)
	}
	for _, c := range []struct {
		family, series string
		want           float64
	}{
		// The server never sees a method it does not serve.
		{"grpc_server_call_started_total", "grpc_method=" + sayHello, 3 + 16 + 2 + 1},
		// A retried call: one call, one attempt, three server calls.
		{"grpc_client_call_duration_seconds", "grpc_method=" + sayHello + ",grpc_status=UNAVAILABLE", 1},
		{"grpc_client_attempt_duration_seconds", "grpc_method=" + sayHello + ",grpc_status=UNAVAILABLE", 1},
		{"grpc_server_call_duration_seconds", "grpc_method=" + sayHello + ",grpc_status=UNAVAILABLE", 3},
		// The client still labels generic calls and unserved methods.
		{"grpc_client_call_duration_seconds", "grpc_method=other,grpc_status=OK", 1},
		{"grpc_client_attempt_started_total", "grpc_method=" + unregistered[1:], 1},
	} {
		if n, found := seriesTotal(got, c.family, c.series); !found || n != c.want {
			t.Errorf("%s{%s} = %v (found %v), want %v", c.family, c.series, n, found, c.want)
		}
	}
	if _, found := seriesTotal(got, "grpc_server_call_started_total", "grpc_method="+OtherMethod); found {
		t.Errorf("interceptor mode counted a server call of %q", OtherMethod)
	}
}

// TestCallMetricsStreams checks that both modes record the stream metrics
// alongside the A66 ones, and not for unary calls.
func TestCallMetricsStreams(t *testing.T) {
	for _, mode := range []struct {
		name string
		inst instrumentation
	}{{"stats handlers", kitHandler}, {"interceptors", kitInterceptors}} {
		t.Run(mode.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			srvOpts, dialOpts := mode.inst(t, mp)
			client := startGreeter(t, &greeter{}, srvOpts, dialOpts)
			ctx := testContext(t)
			if _, err := client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "ann"}); err != nil {
				t.Fatal(err)
			}
			stream, err := client.StreamGreetings(ctx, &greeterv1.StreamGreetingsRequest{Name: "bob", Count: 3})
			if err != nil {
				t.Fatal(err)
			}
			for {
				if _, err := stream.Recv(); err != nil {
					break
				}
			}
			eventually(t, func() string {
				got := collectStreams(t, reader)
				want := map[streamPoint]float64{}
				for _, side := range []string{SideServer, SideClient} {
					sent, rcvd := 3.0, 1.0
					if side == SideClient {
						sent, rcvd = rcvd, sent
					}
					want[streamPoint{MetricStreamActive, streamGreetings, side}] = 0
					want[streamPoint{MetricStreamMessagesSent, streamGreetings, side}] = sent
					want[streamPoint{MetricStreamMessagesReceived, streamGreetings, side}] = rcvd
					want[streamPoint{MetricStreamDuration, streamGreetings, side}] = 1
				}
				if diff := cmp.Diff(want, got); diff != "" {
					return "stream metrics (-want +got):\n" + diff
				}
				return ""
			})
		})
	}
}

func TestA66Bounds(t *testing.T) {
	if diff := cmp.Diff(opentelemetry.DefaultLatencyBounds, a66LatencyBounds); diff != "" {
		t.Errorf("latency bounds differ from grpc-go's (-grpc-go +kit):\n%s", diff)
	}
	if diff := cmp.Diff(opentelemetry.DefaultSizeBounds, a66SizeBounds); diff != "" {
		t.Errorf("size bounds differ from grpc-go's (-grpc-go +kit):\n%s", diff)
	}
}

func TestStatusName(t *testing.T) {
	for c, want := range map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.Unauthenticated: "UNAUTHENTICATED", 17: "CODE(17)", 1000: "CODE(1000)",
	} {
		if got := statusName(c); got != want {
			t.Errorf("statusName(%d) = %q, want %q", c, got, want)
		}
	}
	a := newA66Attrs(attribute.String(attrMethod, "m"))
	first, second := a.withStatus(codes.NotFound), a.withStatus(codes.NotFound)
	if &first[0] != &second[0] {
		t.Error("withStatus did not cache the options of NotFound")
	}
	set := metric.NewRecordConfig(a.withStatus(99)).Attributes()
	if v, _ := set.Value(attrStatus); v.AsString() != "CODE(99)" {
		t.Errorf("withStatus(99) has grpc.status %q", v.AsString())
	}
}

func TestBoundedCache(t *testing.T) {
	made := 0
	c := newBoundedCache(3, 5, "other", func(k string) string { made++; return "v" + k })
	for _, k := range []string{"a", "b", "a", "toolong", "c", "d", "b"} {
		c.get(k)
	}
	for k, want := range map[string]string{"a": "va", "b": "vb", "c": "vc", "d": "other", "toolong": "other"} {
		if got := c.get(k); got != want {
			t.Errorf("get(%q) = %q, want %q", k, got, want)
		}
	}
	if made != 3 {
		t.Errorf("made %d values, want 3", made)
	}

	// Concurrent first uses: every key gets its own value; the race
	// detector checks the snapshot handling.
	c2 := newBoundedCache(MaxStreamMethods, maxMethodLen, -1, func(k string) int { return len(k) })
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				k := strings.Repeat("x", (i+g)%50+1)
				if got := c2.get(k); got != len(k) {
					t.Errorf("get(%q) = %d", k, got)
				}
			}
		})
	}
	wg.Wait()
}

// TestClientTargets checks the grpc.target label: the canonical target of
// the ClientConn, and "other" beyond MaxTargets.
func TestClientTargets(t *testing.T) {
	mp := sdkmetric.NewMeterProvider()
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	h, err := newCallMetrics(mp, SideClient)
	if err != nil {
		t.Fatal(err)
	}
	label := func(c *clientCall, key attribute.Key) string {
		set := metric.NewAddConfig(c.attrs.start).Attributes()
		v, _ := set.Value(key)
		return v.AsString()
	}
	target := func(c *clientCall) string { return label(c, attrTarget) }
	method := func(c *clientCall) string { return label(c, attrMethod) }
	for i := range MaxTargets + 2 {
		cc, err := grpc.NewClient(fmt.Sprintf("passthrough:///host-%d:1", i), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		c := h.newCall(t.Context(), cc, "/pkg.S/M", []grpc.CallOption{grpc.StaticMethod()})
		want := cc.CanonicalTarget()
		if i >= MaxTargets {
			want = otherTarget
		}
		if got := target(c); got != want {
			t.Errorf("target %d: grpc.target = %q, want %q", i, got, want)
		}
		if got := method(c); got != "pkg.S/M" {
			t.Errorf("grpc.method = %q, want pkg.S/M", got)
		}
		if got := method(h.newCall(t.Context(), cc, "/pkg.S/M", nil)); got != OtherMethod {
			t.Errorf("generic call: grpc.method = %q, want %q", got, OtherMethod)
		}
		if err := cc.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// nopHandler is a stats handler that does nothing.
type nopHandler struct{}

func (nopHandler) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (nopHandler) HandleRPC(context.Context, stats.RPCStats)                         {}
func (nopHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (nopHandler) HandleConn(context.Context, stats.ConnStats)                       {}

// nopHandlers installs nopHandler on both sides: what grpc-go itself spends
// on calling a stats handler (events, metadata copies), the floor of any
// stats handler.
func nopHandlers(testing.TB, metric.MeterProvider) ([]grpc.ServerOption, []grpc.DialOption) {
	return []grpc.ServerOption{grpc.StatsHandler(nopHandler{})}, []grpc.DialOption{grpc.WithStatsHandler(nopHandler{})}
}

// BenchmarkCallMetrics measures a unary call over loopback, server and
// client: with no metrics, with a stats handler that does nothing (grpc-go's
// own cost of calling one), with grpc-go's OpenTelemetry plugin ("bare"),
// with the kit's stats handlers and with its interceptors. cpu-ns/op is the
// CPU time of the process per call.
func BenchmarkCallMetrics(b *testing.B) {
	for _, bc := range []struct {
		name string
		inst instrumentation
	}{{"nometrics", nil}, {"nophandler", nopHandlers}, {"bare", grpcPlugin}, {"kit", kitHandler}, {"kit-interceptors", kitInterceptors}} {
		b.Run(bc.name, func(b *testing.B) {
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			var srvOpts []grpc.ServerOption
			var dialOpts []grpc.DialOption
			if bc.inst != nil {
				srvOpts, dialOpts = bc.inst(b, mp)
			}
			client := startGreeter(b, &greeter{}, srvOpts, dialOpts)
			ctx := b.Context()
			req := &greeterv1.SayHelloRequest{Name: "bench"}
			if _, err := client.SayHello(ctx, req); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu0, cpuOK := processCPUTime()
			for b.Loop() {
				if _, err := client.SayHello(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			// CPU time (server and client together) says more than ns/op,
			// the latency of a call, on a busy machine.
			if cpu1, ok := processCPUTime(); ok && cpuOK {
				b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
			}
		})
	}
}
