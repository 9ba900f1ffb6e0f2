package notify

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"
)

// maxErrorLen bounds the error text stored with a notification.
const maxErrorLen = 500

// runSender is the sender loop: every PollInterval, or sooner after a
// Wake, it sends the due notifications. It returns when ctx ends.
func (s *Service) runSender(ctx context.Context) {
	defer s.wg.Done()
	ticker := time.NewTicker(s.cfg.PollInterval)
	defer ticker.Stop()
	failing := false
	for {
		err := s.tick(ctx)
		if ctx.Err() != nil {
			return
		}
		// Log a failure once, when it starts, and the recovery, so that a
		// database outage does not flood the log.
		switch {
		case err != nil && !failing:
			s.logger.LogAttrs(ctx, slog.LevelWarn, "notify sender: step failed; retrying", slog.String("error", err.Error()))
		case err == nil && failing:
			s.logger.LogAttrs(ctx, slog.LevelInfo, "notify sender: recovered")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-s.wake:
		}
	}
}

// tick sends the notifications due now, at most maxBatchesPerTick batches
// of BatchSize, one at a time.
func (s *Service) tick(ctx context.Context) error {
	for range maxBatchesPerTick {
		due, err := s.store.Due(ctx, time.Now(), s.cfg.BatchSize)
		if err != nil {
			return err
		}
		for _, id := range due {
			if err := s.attempt(ctx, id); err != nil {
				return err
			}
		}
		if len(due) < s.cfg.BatchSize {
			return nil
		}
	}
	return nil
}

// attempt claims one due notification and tries to send it, then records
// the outcome: SENT; PENDING again after a backoff; or FAILED, when the
// message was rejected for good or this was attempt MaxAttempts. It
// returns only database errors and ctx's: a failed send is an outcome.
//
// Delivery is at least once: a crash after the mail server accepted the
// message but before Sent committed sends it again after the lease, with
// the same Message-ID, so that receivers can drop the duplicate.
func (s *Service) attempt(ctx context.Context, id string) error {
	now := time.Now()
	n, ok, err := s.store.Claim(ctx, id, now, now.Add(s.cfg.SendTimeout+leaseMargin))
	if err != nil || !ok {
		return err // !ok: another sender has it
	}
	m, err := compose(&n, s.from)
	if err == nil {
		sendCtx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
		err = s.sender.Send(sendCtx, m)
		cancel()
	}
	if ctx.Err() != nil {
		// Shutting down: the lease runs out and the attempt is made again.
		return ctx.Err()
	}
	now = time.Now()
	switch {
	case err == nil:
		return s.store.Sent(ctx, n.ID, n.Attempts, now)
	case errors.Is(err, ErrRejected) || n.Attempts >= s.cfg.MaxAttempts:
		s.logger.LogAttrs(ctx, slog.LevelWarn, "notify: giving up on a notification",
			slog.String("notification_id", n.ID), slog.Int("attempts", n.Attempts), slog.String("error", err.Error()))
		return s.store.Fail(ctx, n.ID, n.Attempts, now, errorText(err))
	default:
		return s.store.Retry(ctx, n.ID, n.Attempts, now.Add(s.backoff(n.Attempts)), errorText(err))
	}
}

// backoff is the wait after failed attempt number attempt (from 1):
// RetryBackoff doubled attempt-1 times, at most MaxRetryBackoff.
func (s *Service) backoff(attempt int) time.Duration {
	d := s.cfg.RetryBackoff
	for i := 1; i < attempt && d < s.cfg.MaxRetryBackoff; i++ {
		d *= 2
	}
	return min(d, s.cfg.MaxRetryBackoff)
}

// errorText is err's text, valid UTF-8, cut to maxErrorLen bytes.
func errorText(err error) string {
	s := strings.ToValidUTF8(err.Error(), "\uFFFD")
	if len(s) > maxErrorLen {
		s = s[:maxErrorLen]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}
