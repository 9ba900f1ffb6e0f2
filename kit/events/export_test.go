package events

// Queued returns how many deliveries wait for c's group commit.
func Queued(c *Consumer) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}
