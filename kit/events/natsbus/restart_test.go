package natsbus_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/events/eventstest"
	"github.com/switchboard-rpc/switchboard/kit/events/natsbus"
)

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// TestBrokerRestartLosesNothing restarts the embedded broker on the same
// directory and port while a publisher and a subscriber run. The publisher
// retries a failed publish with the same id, as the outbox relay does.
// Every published id must be delivered; a duplicate may only be a
// redelivery of a published id.
func TestBrokerRestartLosesNothing(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	first := startEmbedded(t, dir, natsbus.WithPort(port))
	// The streams live in the test's directory, which goes with it.
	tr := open(t, natsbus.Options{URL: first.ClientURL(), Stream: "RESTART", Subject: "restart", MaxBytes: 32 << 20, RequestTimeout: time.Second})
	sub := events.Subscription{Group: "restart", AckWait: 2 * time.Second, Backoff: []time.Duration{50 * time.Millisecond}}
	if err := tr.Setup(t.Context(), sub); err != nil {
		t.Fatalf("Setup = %v", err)
	}

	var mu sync.Mutex
	delivered := map[string]int{}
	eventstest.Subscribe(t, tr, sub, func(_ context.Context, d events.Delivery) error {
		mu.Lock()
		delivered[d.ID]++
		mu.Unlock()
		// Some work, so that messages are in hand when the broker stops.
		time.Sleep(5 * time.Millisecond)
		return nil
	})
	deliveredIDs := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered)
	}

	const total = 300
	var published, failures atomic.Int64
	pubDone := make(chan error, 1)
	go func() {
		for i := range total {
			m := events.Message{ID: fmt.Sprintf("m-%03d", i), Type: "restart.v1.Tick", Key: "k" + strconv.Itoa(i%7), Data: []byte(strconv.Itoa(i))}
			for {
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				err := tr.Publish(ctx, m)
				cancel()
				if err == nil {
					break
				}
				failures.Add(1)
				if t.Context().Err() != nil {
					pubDone <- err
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			published.Store(int64(i + 1))
			time.Sleep(3 * time.Millisecond)
		}
		pubDone <- nil
	}()

	waitUntil(t, 20*time.Second, "a third published and some delivered", func() bool {
		return published.Load() >= total/3 && deliveredIDs() > 0
	})
	first.Shutdown()
	mid := published.Load()
	// The broker stays down for a while: publishes and acknowledgements
	// in that time fail.
	time.Sleep(500 * time.Millisecond)
	second := startEmbedded(t, dir, natsbus.WithPort(port))
	if got, want := second.ClientURL(), first.ClientURL(); got != want {
		t.Fatalf("restarted server at %s, want %s", got, want)
	}

	select {
	case err := <-pubDone:
		if err != nil {
			t.Fatalf("publisher stopped: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("publisher did not finish")
	}
	waitUntil(t, 30*time.Second, fmt.Sprintf("all %d ids delivered", total), func() bool { return deliveredIDs() >= total })

	// Retried publishes were stored once: the dedup window survived the
	// restart.
	js := connectJS(t, second.ClientURL())
	st, err := js.Stream(t.Context(), "RESTART")
	if err != nil {
		t.Fatalf("Stream(RESTART) = %v", err)
	}
	if got := st.CachedInfo().State.Msgs; got != total {
		t.Errorf("stream holds %d messages, want %d (one per id)", got, total)
	}

	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for i := range total {
		id := fmt.Sprintf("m-%03d", i)
		n := delivered[id]
		if n == 0 {
			t.Errorf("%s was published but never delivered", id)
		}
		dups += max(n-1, 0)
	}
	if len(delivered) != total {
		t.Errorf("delivered %d distinct ids, want %d (only published ones)", len(delivered), total)
	}
	t.Logf("restart after %d of %d published; %d failed publishes retried; %d redeliveries", mid, total, failures.Load(), dups)
}
