// Package rabbitbus is the RabbitMQ events.Transport, built on
// github.com/rabbitmq/amqp091-go.
//
//	tr, err := rabbitbus.New(ctx, rabbitbus.Options{
//		URL:    "amqps://shop:secret@rabbit.internal:5671/",
//		Logger: logger,
//	})
//	...
//	defer tr.Close()
//
// # Topology
//
// Every event goes to one durable topic exchange (Options.Exchange) with
// its type as the routing key. Types are AMQP topic words separated by
// dots, so a protobuf full name such as switchboard.events.v1.OrderPlaced
// is a routing key as it is; the wildcards '*' and '#' and spaces are
// refused. A consumer group owns a durable quorum queue, Prefix+Group,
// bound to the exchange once per subscribed type ("#" when it subscribes
// to all), and a dead-letter queue, Prefix+Group+".dlq", bound to a
// direct dead-letter exchange. Both queues have a single active consumer:
// every instance of the group may subscribe, one at a time receives, and
// another takes over when it goes, which is what keeps messages of one
// key in order across instances. Setup adds bindings; a type dropped
// from a group's subscription stays bound until it is unbound on the
// broker.
//
// # Publishing
//
// Publish sends persistent messages (message id = Message.ID, type =
// Message.Type, the key and Message.Header as headers) on a channel in
// confirm mode and returns once the broker confirmed the message, so an
// outbox row is marked sent only when the broker has it. Concurrent
// publishes share the channel and wait for their own confirms. If the
// connection is lost before the confirm, the message is sent again on
// the next one: delivery is at least once, and consumers deduplicate by
// ID.
//
// # Consuming
//
// Deliveries are acknowledged one by one after the handler succeeds.
// Failures are retried inside the subscriber, not by returning the
// message to the queue, so a failed message is retried before any later
// message with its key. Dead letters are published by the subscriber,
// with a confirm, before the original is acknowledged; the queue's
// x-delivery-limit is only a safety net for messages whose deliveries
// keep being cut short by crashes.
//
// # Connections
//
// A Transport holds a publishing and a consuming connection. When either
// is lost, it is dialled again with a doubling, jittered backoff for as
// long as the Transport is open; publishes wait for it within their
// deadline, and subscriptions declare their queues again, resume
// consuming and receive again what was unacknowledged.
package rabbitbus
