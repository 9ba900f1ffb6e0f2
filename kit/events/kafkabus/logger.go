package kafkabus

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLogger passes the Kafka client's log lines to slog. The client's
// informational lines (joins, assignments, metadata) become debug lines;
// its debug lines are dropped.
type kgoLogger struct {
	l     *slog.Logger
	level kgo.LogLevel
}

func newKgoLogger(l *slog.Logger) kgoLogger {
	ctx := context.Background()
	level := kgo.LogLevelNone
	switch {
	case l.Enabled(ctx, slog.LevelDebug):
		level = kgo.LogLevelInfo
	case l.Enabled(ctx, slog.LevelWarn):
		level = kgo.LogLevelWarn
	case l.Enabled(ctx, slog.LevelError):
		level = kgo.LogLevelError
	}
	return kgoLogger{l: l.With(slog.String("component", "kafka")), level: level}
}

// Level implements kgo.Logger.
func (k kgoLogger) Level() kgo.LogLevel { return k.level }

// Log implements kgo.Logger.
func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var l slog.Level
	switch level {
	case kgo.LogLevelError:
		l = slog.LevelError
	case kgo.LogLevelWarn:
		l = slog.LevelWarn
	case kgo.LogLevelInfo:
		l = slog.LevelDebug
	default:
		return
	}
	k.l.Log(context.Background(), l, msg, keyvals...)
}
