package redisanalyticsexporter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Group commit.
//
// With wait_for_result a client waits for its request's script call, so the
// exporter applies a request as soon as it can instead of lingering to fill
// a batch: one script call runs at a time, and the pushes that arrive while a
// call is in flight wait for the next one, which applies them together. An
// idle exporter applies a request at once; under load the groups grow by
// themselves and the cost of a call is spread over them. Each push of a
// group keeps its own batch marker, so a retry of any one of them, alone or
// in another group, is recognized (internal/protocol, apply.lua).
//
// There is no committer goroutine: the push that finds the committer idle
// leads, i.e. applies the pending pushes itself, its own among them, and then
// hands the lead to the oldest push still waiting, if any. An isolated push
// thus costs no goroutine switch, and under load one switch per group.

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
	done chan error    // buffered: an answer never blocks
	lead chan struct{} // buffered: the lead handed to this push
}

func newPushWaiter(req *countsRequest) *pushWaiter {
	return &pushWaiter{req: req, done: make(chan error, 1), lead: make(chan struct{}, 1)}
}

// committer groups pending pushes and has them applied, one call at a time.
type committer struct {
	// apply runs one group and answers every waiter of it.
	apply func(group []*pushWaiter)

	mu      sync.Mutex
	pending []*pushWaiter
	// leading is true while a push leads (applies groups) or the lead is on
	// its way to heir.
	leading bool
	// heir is the push the lead was handed to; it cannot withdraw.
	heir    *pushWaiter
	started bool
	stopped bool
	// idle is signaled when leading turns false.
	idle *sync.Cond
}

func newCommitter(apply func(group []*pushWaiter)) *committer {
	c := &committer{apply: apply}
	c.idle = sync.NewCond(&c.mu)
	return c
}

func (c *committer) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.started = !c.stopped
}

// shutdown refuses new pushes, waits until no push leads (the groups in
// flight and those already waiting are applied, so that the exporter closes
// its client after them), and answers what is left with errStopped.
// exporterhelper drains the queue before it shuts the exporter down, so
// normally nothing waits. It is safe without start and when called twice.
func (c *committer) shutdown() {
	c.mu.Lock()
	c.stopped, c.started = true, false
	for c.leading {
		c.idle.Wait()
	}
	left := c.pending
	c.pending, c.heir = nil, nil
	c.mu.Unlock()
	for _, w := range left {
		w.done <- errStopped
	}
}

// do queues w and returns its answer: it leads when the committer is idle,
// and takes the lead when it is handed to it. When ctx ends before a group
// took w, w is withdrawn; once taken, do waits for the answer (the call is
// bounded by the exporter's timeout), so that the outcome is known.
func (c *committer) do(ctx context.Context, w *pushWaiter) error {
	lead, ok := c.submit(w)
	if !ok {
		return errNotStarted
	}
	if lead {
		c.leadGroups()
	}
	ctxDone := ctx.Done()
	for {
		select {
		case err := <-w.done:
			return err
		case <-w.lead:
			c.leadGroups()
		case <-ctxDone:
			if c.withdraw(w) {
				return fmt.Errorf("redis apply counters: %w", ctx.Err())
			}
			ctxDone = nil // taken, or the heir: see it through
		}
	}
}

// submit queues w; lead reports that the committer was idle and w's
// goroutine leads.
func (c *committer) submit(w *pushWaiter) (lead, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		return false, false
	}
	c.pending = append(c.pending, w)
	if !c.leading {
		c.leading = true
		return true, true
	}
	return false, true
}

// withdraw removes w if no group has taken it and it is not the heir.
func (c *committer) withdraw(w *pushWaiter) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.pending, w)
	if i < 0 || c.heir == w {
		return false
	}
	c.pending = slices.Delete(c.pending, i, i+1)
	return true
}

// leadGroups applies one group, then hands the lead to the oldest push
// still waiting, or goes idle.
func (c *committer) leadGroups() {
	c.mu.Lock()
	c.heir = nil
	group := c.take()
	c.mu.Unlock()
	if len(group) > 0 {
		c.apply(group)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		c.leading = false
		c.idle.Broadcast()
		return
	}
	c.heir = c.pending[0]
	c.heir.lead <- struct{}{}
}

// take removes and returns the next group: the oldest pending pushes, within
// the group bounds, and at least one. The caller holds mu.
func (c *committer) take() []*pushWaiter {
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
