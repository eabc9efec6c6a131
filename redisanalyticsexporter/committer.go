package redisanalyticsexporter

import (
	"errors"
	"slices"
	"sync"
)

// Group commit.
//
// With wait_for_result a client waits for its request's script call, so the
// exporter applies a request as soon as it can instead of lingering to fill
// a batch: the committer runs one script call at a time, and the pushes that
// arrive while a call is in flight wait for the next one, which applies them
// together. An idle exporter applies a request at once; under load the groups
// grow by themselves and the cost of a call is spread over them. Each push of
// a group keeps its own batch marker, so a retry of any one of them, alone or
// in another group, is recognized (apply.go).

const (
	// maxGroupPushes and maxGroupRecords bound one group: Redis runs a
	// script alone, so one call must not block it for long. A push larger
	// than the bound makes a group of its own.
	maxGroupPushes  = 256
	maxGroupRecords = 1 << 16
)

var errStopped = errors.New("redis_analytics exporter is shutting down")

// pushWaiter is a push waiting for its group's script call.
type pushWaiter struct {
	req  *countsRequest
	done chan error // buffered: the committer never blocks on an answer
}

// committer feeds pending pushes, in groups, to apply, one call at a time.
type committer struct {
	// apply runs one group and answers every waiter of it.
	apply func(group []*pushWaiter)

	mu      sync.Mutex
	pending []*pushWaiter
	started bool
	stopped bool

	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

func newCommitter(apply func(group []*pushWaiter)) *committer {
	return &committer{apply: apply, wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

func (c *committer) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.stopped {
		return
	}
	c.started = true
	c.wg.Go(c.loop)
}

// shutdown stops the loop after the group in flight and answers what still
// waits with errStopped. It is safe without start and when called twice.
func (c *committer) shutdown() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.stopped = true
	close(c.stop)
	c.mu.Unlock()
	c.wg.Wait()
	c.mu.Lock()
	left := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, w := range left {
		w.done <- errStopped
	}
}

// submit queues w for the next group; false when the committer is stopped.
func (c *committer) submit(w *pushWaiter) bool {
	c.mu.Lock()
	if c.stopped || !c.started {
		c.mu.Unlock()
		return false
	}
	c.pending = append(c.pending, w)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // a wake-up is already due
	}
	return true
}

// withdraw removes w if no group has taken it yet.
func (c *committer) withdraw(w *pushWaiter) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.pending, w)
	if i < 0 {
		return false
	}
	c.pending = slices.Delete(c.pending, i, i+1)
	return true
}

func (c *committer) loop() {
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		}
		for group := c.take(); len(group) > 0; group = c.take() {
			c.apply(group)
		}
	}
}

// take removes and returns the next group: the oldest pending pushes, within
// the group bounds, and at least one.
func (c *committer) take() []*pushWaiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, records := 0, 0
	for n < len(c.pending) && n < maxGroupPushes {
		records += c.pending[n].req.records
		if n > 0 && records > maxGroupRecords {
			break
		}
		n++
	}
	group := slices.Clone(c.pending[:n])
	c.pending = slices.Delete(c.pending, 0, n)
	return group
}
