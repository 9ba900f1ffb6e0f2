package etcd

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// NewClient connects to the etcd cluster at endpoints ("127.0.0.1:2379"
// or "http://10.0.0.5:2379") with bounded dials and keepalive, logging
// through logger. Like grpc.NewClient it does not wait for etcd: calls made
// while etcd is down fail with their own deadline. The caller closes it.
func NewClient(endpoints []string, logger *slog.Logger) (*clientv3.Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if logger == nil {
		return nil, errors.New("etcd: nil logger")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               ZapLogger(logger.With(slog.String("component", "etcd-client"))),
		// Reconnect within seconds once etcd is back, instead of grpc's
		// default backoff that grows to two minutes.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	return cli, nil
}
