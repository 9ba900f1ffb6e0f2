package kafkabus_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/switchboard-rpc/switchboard/kit/events"
	"github.com/switchboard-rpc/switchboard/kit/events/kafkabus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait bounds every wait in these tests.
const wait = 30 * time.Second

// startCluster starts an in-process Kafka cluster that the test closes.
func startCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		t.Fatalf("kfake.NewCluster() = %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// options are the transport options for tests against c: short heartbeats,
// so that rebalances are quick, and warnings in the test log.
func options(t *testing.T, c *kfake.Cluster) kafkabus.Options {
	return kafkabus.Options{
		Brokers:           c.ListenAddrs(),
		Topic:             "events",
		Partitions:        4,
		Logger:            slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		HeartbeatInterval: 100 * time.Millisecond,
		FetchMaxWait:      500 * time.Millisecond,
	}
}

// newTransport returns a transport that the test closes.
func newTransport(t *testing.T, opts kafkabus.Options) *kafkabus.Transport {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	tr, err := kafkabus.New(ctx, opts)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return tr
}

func setup(t *testing.T, tr *kafkabus.Transport, sub events.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := tr.Setup(ctx, sub); err != nil {
		t.Fatalf("Setup(%s) = %v", sub.Group, err)
	}
}

func msg(key string, n int) events.Message {
	id := fmt.Sprintf("A-%s-%d", key, n)
	return events.Message{ID: id, Type: "A", Key: key, Data: []byte(id)}
}

// publishKeys publishes n messages for each key, keys concurrently and
// each key's messages in order.
func publishKeys(t *testing.T, tr *kafkabus.Transport, keys []string, from, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	for _, k := range keys {
		wg.Go(func() {
			for i := from; i < from+n; i++ {
				if err := tr.Publish(ctx, msg(k, i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish() = %v", err)
	}
}

func keyNames(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "key" + strconv.Itoa(i)
	}
	return keys
}

// recorder records successful deliveries in the order they happened.
type recorder struct {
	mu   sync.Mutex
	got  []events.Delivery
	by   []string // which member handled got[i]
	wake chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) add(member string, d events.Delivery) {
	r.mu.Lock()
	r.got = append(r.got, d)
	r.by = append(r.by, member)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() ([]events.Delivery, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got), slices.Clone(r.by)
}

// distinct returns how many different ids were recorded.
func (r *recorder) distinct() int {
	got, _ := r.snapshot()
	seen := map[string]bool{}
	for _, d := range got {
		seen[d.ID] = true
	}
	return len(seen)
}

// waitFor waits until cond holds.
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-r.wake:
		case <-time.After(20 * time.Millisecond):
		case <-deadline.C:
			t.Fatalf("waiting for %s: timed out after %v with %d distinct deliveries", what, wait, r.distinct())
		}
	}
}

// checkOrder checks that per key, first deliveries are in publish order,
// and returns the number of distinct ids.
func checkOrder(t *testing.T, got []events.Delivery) int {
	t.Helper()
	last := map[string]int{}
	seen := map[string]bool{}
	for _, d := range got {
		if seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		n, err := strconv.Atoi(d.ID[strings.LastIndexByte(d.ID, '-')+1:])
		if err != nil {
			t.Fatalf("delivery with foreign id %q", d.ID)
		}
		if prev, ok := last[d.Key]; ok && n != prev+1 {
			t.Errorf("key %s: %s first delivered after #%d, want #%d", d.Key, d.ID, prev, prev+1)
		}
		last[d.Key] = n
	}
	return len(seen)
}
