package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// PolicySource delivers the document stored at one etcd key, now and at
// every change; it is a kit/discovery/canary Source:
//
//	go table.Follow(ctx, etcd.NewPolicySource(cli, "switchboard/canary"))
//
// A missing or deleted key is delivered as an empty document. While etcd
// is unreachable it keeps retrying with backoff and delivers nothing, so
// the last policy stays in force.
type PolicySource struct {
	cli *clientv3.Client
	key string
	o   options
}

// NewPolicySource returns a source for key. Options: WithLogger,
// WithBackoff, WithOpTimeout.
func NewPolicySource(cli *clientv3.Client, key string, opts ...Option) *PolicySource {
	return &PolicySource{cli: cli, key: key, o: newOptions(opts)}
}

// Watch calls apply with the document now and after each change until ctx
// ends, and returns ctx's error.
func (s *PolicySource) Watch(ctx context.Context, apply func(doc []byte)) error {
	if s.cli == nil || s.key == "" {
		return errors.New("etcd: policy source needs a client and a key")
	}
	attempt := 0
	for {
		got, err := s.follow(ctx, apply)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if got {
			attempt = 0
		}
		wait := s.o.backoff(attempt)
		attempt++
		s.o.logger.LogAttrs(ctx, slog.LevelWarn, "following the canary policy failed; retrying",
			slog.String("key", s.key), slog.String("error", err.Error()), slog.Duration("wait", wait))
		if !sleep(ctx.Done(), wait) {
			return ctx.Err()
		}
	}
}

// follow reads the key, then applies its changes until the watch fails. It
// reports whether the read succeeded.
func (s *PolicySource) follow(ctx context.Context, apply func([]byte)) (bool, error) {
	octx, cancel := context.WithTimeout(ctx, s.o.opTimeout)
	resp, err := s.cli.Get(octx, s.key)
	cancel()
	if err != nil {
		return false, fmt.Errorf("reading: %w", err)
	}
	var doc []byte
	if len(resp.Kvs) > 0 {
		doc = resp.Kvs[0].Value
	}
	apply(doc)
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	for wr := range s.cli.Watch(wctx, s.key, clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return true, fmt.Errorf("watching: %w", err)
		}
		for _, ev := range wr.Events {
			switch ev.Type {
			case clientv3.EventTypePut:
				apply(ev.Kv.Value)
			case clientv3.EventTypeDelete:
				apply(nil)
			}
		}
	}
	return true, errors.New("watch closed")
}
