package kafkabus

// SetQueueLimits sets the per-partition queue limits for one test and
// returns a function that restores them.
func SetQueueLimits(high, low int) (restore func()) {
	oldHigh, oldLow := queueHigh, queueLow
	queueHigh, queueLow = high, low
	return func() { queueHigh, queueLow = oldHigh, oldLow }
}
