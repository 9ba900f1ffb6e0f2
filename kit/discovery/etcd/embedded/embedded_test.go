package embedded_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/switchboard-rpc/switchboard/kit/discovery/etcd/embedded"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRestartKeepsData starts a server, writes a key, restarts it on the
// same directory and ports, and reads the key back.
func TestRestartKeepsData(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	srv, err := embedded.Start(ctx, embedded.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	put := func(s *embedded.Server, k, v string) {
		t.Helper()
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint()}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cli.Close() }()
		if v != "" {
			if _, err := cli.Put(ctx, k, v); err != nil {
				t.Fatal(err)
			}
			return
		}
		resp, err := cli.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "kept" {
			t.Errorf("Get(%q) after restart = %v, want one key with value kept", k, resp.Kvs)
		}
	}
	put(srv, "k", "kept")
	srv.Close()
	srv.Close() // idempotent
	again, err := embedded.Start(ctx, srv.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got, want := again.Endpoint(), srv.Endpoint(); got != want {
		t.Errorf("Endpoint() after restart = %q, want %q", got, want)
	}
	put(again, "k", "")
}
