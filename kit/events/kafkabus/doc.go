// Package kafkabus is the Kafka events.Transport, built on franz-go.
//
//	tr, err := kafkabus.New(ctx, kafkabus.Options{
//		Brokers: []string{"kafka-0:9092", "kafka-1:9092"},
//		Topic:   "switchboard.events",
//		Logger:  logger,
//	})
//	...
//	defer tr.Close()
//	err = tr.Subscribe(ctx, events.Subscription{Group: "notify"}, handle)
//
// # Topics
//
// Every event goes to one topic (Options.Topic); dead letters go to the
// topic named after it with DeadLetterSuffix. New creates both if they are
// missing, with Options.Partitions partitions. A record's key is the
// message key, so messages with one key share a partition and keep their
// order; its value is the message data; the id, the type and every
// message header travel as record headers (HeaderID, HeaderType).
//
// # Publishing
//
// Publish writes with the idempotent producer and acks from all in-sync
// replicas, and returns once the write is acknowledged. Within one
// producer session the brokers drop duplicate retries; a message
// published twice by the caller (after a failed Publish, say) is stored
// twice, and consumers, which are idempotent, see it twice.
//
// # Consumer groups
//
// A Subscription's group is a Kafka consumer group of the same name.
// Setup gives a new group a committed position at the current end of
// every partition, so it keeps every message published from then on even
// before any member runs; a group with positions keeps them. Subscribe
// joins the group: its partitions are shared among the members, each
// member handles a partition's records in order, one at a time, and
// different partitions at once. Offsets are committed by hand, only past
// records whose handling has finished, so a member that stops or dies
// leaves its unfinished records to whoever takes its partitions.
// Rebalances wait while a delivery is in progress, and commit before
// partitions move.
//
// A failed delivery is retried after the subscription's backoff, holding
// back the rest of its partition (and so the later messages of its key),
// until MaxDeliver attempts have failed; the message then goes to the
// dead-letter topic with events.HeaderError, events.HeaderAttempts and
// events.HeaderGroup set, and the partition moves on. An error wrapping
// events.ErrPermanent is dead-lettered at once. A subscription with
// DeadLetters set reads the dead-letter topic in a group of its own (the
// group's name with DeadLetterSuffix) and sees only its group's dead
// letters, from the first one on.
//
// AckWait ends the handler's context; a handler that ignores its context
// holds its partition for as long as it runs, and a member that holds a
// rebalance past Options.RebalanceTimeout is removed from the group.
//
// A Transport is safe for concurrent use. Close ends its subscriptions
// before it closes the connections.
package kafkabus
