package kafkabus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/sasl"
)

// Defaults for Options fields left zero.
const (
	DefaultTopic             = "switchboard.events"
	DefaultPartitions        = 6
	DefaultClientID          = "switchboard"
	DefaultDialTimeout       = 10 * time.Second
	DefaultAdminTimeout      = 30 * time.Second
	DefaultProduceTimeout    = 30 * time.Second
	DefaultCommitTimeout     = 10 * time.Second
	DefaultSessionTimeout    = 45 * time.Second
	DefaultHeartbeatInterval = 3 * time.Second
	DefaultRebalanceTimeout  = 60 * time.Second
	DefaultFetchMaxWait      = 5 * time.Second
)

// DeadLetterSuffix is appended to Options.Topic to name the dead-letter
// topic, and to a subscription's group to name the consumer group that
// reads the group's dead letters.
const DeadLetterSuffix = ".dlq"

// maxTopicLen is Kafka's limit on topic names.
const maxTopicLen = 249

// Options configure a Transport. Only Brokers is required; every other
// zero field takes its default.
type Options struct {
	// Brokers are the seed brokers, as "host:port".
	Brokers []string
	// Topic carries every event (default DefaultTopic); dead letters go to
	// Topic+DeadLetterSuffix. Both are created if missing.
	Topic string
	// Partitions is the partition count of topics the transport creates
	// (default 6). Messages with one key share a partition, so it caps
	// how many handlers one group runs at once.
	Partitions int32
	// ReplicationFactor of topics the transport creates; 0 means the
	// broker's default.
	ReplicationFactor int16
	// ClientID names the process to the brokers (default "switchboard").
	ClientID string
	// TLS, if set, dials the brokers over TLS with this configuration.
	TLS *tls.Config
	// SASL, if set, authenticates every connection with this mechanism.
	SASL sasl.Mechanism
	// Logger receives the transport's log lines and the Kafka client's
	// warnings; nil discards them.
	Logger *slog.Logger

	// DialTimeout bounds opening one broker connection (default 10s).
	DialTimeout time.Duration
	// AdminTimeout bounds the topic and offset administration done by New
	// and Setup (default 30s).
	AdminTimeout time.Duration
	// ProduceTimeout bounds Publish, and each try to write a dead letter,
	// when the context allows longer (default 30s).
	ProduceTimeout time.Duration
	// CommitTimeout bounds one offset commit (default 10s).
	CommitTimeout time.Duration
	// Linger is how long the producer waits to batch records bound for
	// one partition; 0 sends at once, which suits Publish's one-at-a-time
	// acknowledged writes.
	Linger time.Duration

	// SessionTimeout is how long the group coordinator waits for a
	// heartbeat before it removes a silent member (default 45s); it must
	// lie within the broker's group.min/max.session.timeout.ms.
	SessionTimeout time.Duration
	// HeartbeatInterval is how often members heartbeat, and so how fast
	// they learn of a rebalance (default 3s).
	HeartbeatInterval time.Duration
	// RebalanceTimeout is how long members may take to finish in-flight
	// work when partitions move (default 60s). A subscription raises it to
	// its AckWait plus a margin, so a handler may finish before its
	// partition moves.
	RebalanceTimeout time.Duration
	// FetchMaxWait is how long a fetch waits at the broker for new records
	// (default 5s). New records end the wait at once; it only bounds how
	// soon a paused partition resumes.
	FetchMaxWait time.Duration
}

// withDefaults returns o with zero fields set and checks it.
func (o Options) withDefaults() (Options, error) {
	if o.Topic == "" {
		o.Topic = DefaultTopic
	}
	if o.Partitions == 0 {
		o.Partitions = DefaultPartitions
	}
	if o.ReplicationFactor == 0 {
		o.ReplicationFactor = -1 // the broker's default.replication.factor
	}
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&o.DialTimeout, DefaultDialTimeout},
		{&o.AdminTimeout, DefaultAdminTimeout},
		{&o.ProduceTimeout, DefaultProduceTimeout},
		{&o.CommitTimeout, DefaultCommitTimeout},
		{&o.SessionTimeout, DefaultSessionTimeout},
		{&o.HeartbeatInterval, DefaultHeartbeatInterval},
		{&o.RebalanceTimeout, DefaultRebalanceTimeout},
		{&o.FetchMaxWait, DefaultFetchMaxWait},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	return o, o.validate()
}

func (o Options) validate() error {
	var errs []error
	if len(o.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers"))
	}
	if err := validTopic(o.Topic); err != nil {
		errs = append(errs, err)
	}
	if o.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partitions %d: want at least 1", o.Partitions))
	}
	if o.ReplicationFactor < -1 {
		errs = append(errs, fmt.Errorf("replication factor %d: want at least 1", o.ReplicationFactor))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"dial timeout", o.DialTimeout},
		{"admin timeout", o.AdminTimeout},
		{"produce timeout", o.ProduceTimeout},
		{"commit timeout", o.CommitTimeout},
		{"session timeout", o.SessionTimeout},
		{"heartbeat interval", o.HeartbeatInterval},
		{"rebalance timeout", o.RebalanceTimeout},
		{"fetch max wait", o.FetchMaxWait},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v: want positive", d.name, d.v))
		}
	}
	if o.Linger < 0 || o.Linger > time.Minute {
		errs = append(errs, fmt.Errorf("linger %v: want 0 to 1m", o.Linger))
	}
	if o.ProduceTimeout > 0 && o.ProduceTimeout < time.Second {
		errs = append(errs, fmt.Errorf("produce timeout %v: want at least 1s", o.ProduceTimeout))
	}
	if o.SessionTimeout > 0 && o.HeartbeatInterval >= o.SessionTimeout {
		errs = append(errs, fmt.Errorf("heartbeat interval %v: want less than the session timeout %v", o.HeartbeatInterval, o.SessionTimeout))
	}
	if o.FetchMaxWait > 0 && o.FetchMaxWait < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("fetch max wait %v: want at least 10ms", o.FetchMaxWait))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kafkabus: options: %w", err)
	}
	return nil
}

// validTopic checks name against Kafka's rules for topic names, leaving
// room for the dead-letter suffix.
func validTopic(name string) error {
	if name == "." || name == ".." {
		return fmt.Errorf("topic %q: not a valid name", name)
	}
	if n := len(name) + len(DeadLetterSuffix); n > maxTopicLen {
		return fmt.Errorf("topic %q: longer than %d characters", name, maxTopicLen-len(DeadLetterSuffix))
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return fmt.Errorf("topic %q: %q not allowed (letters, digits, '.', '_' and '-')", name, r)
		}
	}
	return nil
}
