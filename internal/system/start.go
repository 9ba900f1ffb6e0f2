package system

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Started is a run started by Start.
type Started struct {
	// Addrs are the addresses the run serves at (see Config.OnReady).
	Addrs map[string]string

	cancel context.CancelFunc
	done   chan error
	stop   sync.Once
	err    error
}

// Start runs services in the background and returns once every one is
// ready, or Run's error if it ends first or is not ready within
// readyTimeout. The caller stops the run with Stop. It is for tests and
// tools that run the system in their own process.
func Start(cfg Config, services []Service, readyTimeout time.Duration) (*Started, error) {
	ready := make(chan map[string]string, 1)
	onReady := cfg.OnReady
	cfg.OnReady = func(addrs map[string]string) {
		if onReady != nil {
			onReady(addrs)
		}
		ready <- addrs
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Started{cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- Run(ctx, cfg, services) }()
	select {
	case s.Addrs = <-ready:
		return s, nil
	case err := <-s.done:
		cancel()
		if err == nil {
			err = errors.New("system: the run ended before it was ready")
		}
		return nil, err
	case <-time.After(readyTimeout):
		cancel()
		return nil, errors.Join(fmt.Errorf("system: not ready within %v", readyTimeout), <-s.done)
	}
}

// Stop ends the run gracefully and returns Run's error, waiting at most
// timeout. Calling it again returns the same error.
func (s *Started) Stop(timeout time.Duration) error {
	s.stop.Do(func() {
		s.cancel()
		select {
		case s.err = <-s.done:
		case <-time.After(timeout):
			s.err = fmt.Errorf("system: the run did not stop within %v", timeout)
		}
	})
	return s.err
}
