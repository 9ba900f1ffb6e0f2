package shipping

import (
	"context"
	"log/slog"
	"time"
)

// runCarrier is the simulated carrier: every PollInterval, or sooner after
// a Release, it advances the due shipments. It returns when ctx ends.
func (s *Service) runCarrier(ctx context.Context) {
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
			s.logger.LogAttrs(ctx, slog.LevelWarn, "shipping carrier: step failed; retrying", slog.String("error", err.Error()))
		case err == nil && failing:
			s.logger.LogAttrs(ctx, slog.LevelInfo, "shipping carrier: recovered")
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

// tick advances the shipments due now, at most maxBatchesPerTick batches
// of BatchSize. Each step is a conditional UPDATE, so shipments another
// replica advanced meanwhile are skipped.
func (s *Service) tick(ctx context.Context) error {
	for range maxBatchesPerTick {
		now := time.Now()
		due, err := s.store.Due(ctx, now, s.cfg.BatchSize)
		if err != nil {
			return err
		}
		for _, d := range due {
			tr, err := s.store.Advance(ctx, d.ShipmentID, d.Status, now, now.Add(s.cfg.StepInterval))
			if err != nil {
				return err
			}
			if tr != nil {
				s.changed(ctx, tr)
			}
		}
		if len(due) < s.cfg.BatchSize {
			return nil
		}
	}
	return nil
}
