package redisanalyticsexporter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/collector/component/componentstatus"
	"go.uber.org/zap"

	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
)

// Connecting. start makes one attempt; when Redis is down or unreachable it
// returns nil and connectInBackground keeps trying, with a delay that
// doubles from reconnectInitialDelay to reconnectMaxDelay, until it connects
// or shutdown stops it. Meanwhile the committer answers every push with
// errNotConnected, a plain (retryable) error: exporterhelper retries it, and
// clients waiting for a result retry theirs.

const (
	reconnectInitialDelay = 100 * time.Millisecond
	reconnectMaxDelay     = 5 * time.Second
	// maxConnectTimeout bounds one attempt (PING, the cluster check and
	// INFO memory), and the "timeout" setting bounds it further.
	maxConnectTimeout = 5 * time.Second
)

// errNotConnected answers the pushes of a started exporter that has not
// reached Redis yet; unlike errNotStarted, it goes away by itself.
var errNotConnected = errors.New("redis_analytics exporter is not connected to Redis yet (it keeps connecting in the background)")

// connect makes one connection attempt: PING (and the cluster check) under
// the attempt's timeout, then the eviction warning. On success it adds the
// hooks and publishes the client and its script runner; on failure it
// records the error for errNotConnected and returns it.
func (e *redisAnalyticsExporter) connect(ctx context.Context) error {
	timeout := maxConnectTimeout
	if t := e.cfg.TimeoutConfig.Timeout; t > 0 {
		timeout = min(t, timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client, err := e.cfg.Redis.NewClient(ctx)
	if err != nil {
		e.mu.Lock()
		e.connErr = err
		e.mu.Unlock()
		return err
	}
	// Before the hooks: redis_commands counts the counting path only.
	e.cfg.Redis.WarnIfEvicting(ctx, client, e.logger)
	hooks := append(slices.Clone(e.hooks), commandCounter{e})
	for _, h := range hooks {
		client.AddHook(h)
	}
	runner := e.cfg.Redis.NewScriptRunner(client, hooks...)
	e.mu.Lock()
	e.client, e.runner, e.connErr = client, runner, nil
	e.mu.Unlock()
	e.logger.Info("Connected to Redis",
		zap.String("redis", e.cfg.Redis.Describe()),
		zap.String("key_prefix", e.cfg.KeyPrefix),
		zap.Int("wait_replicas", e.cfg.Redis.WaitReplicas))
	return nil
}

// connectInBackground reports the failed first attempt (a recoverable error,
// logged once at Warn) and starts the loop that keeps connecting. The loop
// outlives start: it keeps ctx's values, never its cancellation.
func (e *redisAnalyticsExporter) connectInBackground(ctx context.Context, firstErr error) {
	e.logger.Warn("Redis is not reachable: the exporter starts anyway and keeps connecting in the background; "+
		"pushes fail with a retryable error until it connects",
		zap.String("redis", e.cfg.Redis.Describe()), zap.Error(firstErr))
	e.reportFailure(firstErr)
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.mu.Lock()
	e.stopConnect = cancel
	e.mu.Unlock()
	e.connecting.Go(func() { e.connectLoop(ctx) })
}

// connectLoop retries connect with backoff until it succeeds (then reports
// StatusOK), until an attempt meets what no retry fixes (then reports a
// permanent error), or until shutdown cancels ctx.
func (e *redisAnalyticsExporter) connectLoop(ctx context.Context) {
	delay := reconnectInitialDelay
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for attempt := 2; ; attempt++ {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		err := e.connect(ctx)
		switch {
		case err == nil:
			e.reportRecovery()
			return
		case ctx.Err() != nil:
			return
		case redisconn.Unrecoverable(err):
			e.logger.Error("Redis refuses the exporter's settings: it stops connecting; fix them and restart the collector",
				zap.String("redis", e.cfg.Redis.Describe()), zap.Error(err))
			if host := e.currentHost(); host != nil {
				componentstatus.ReportStatus(host, componentstatus.NewPermanentErrorEvent(fmt.Errorf("connect to redis: %w", err)))
			}
			return
		}
		delay = min(2*delay, reconnectMaxDelay)
		e.logger.Debug("Redis still not reachable", zap.Int("attempt", attempt),
			zap.Duration("next_attempt_in", delay), zap.Error(err))
		timer.Reset(delay)
	}
}

// applyWhenConnected is the committer's apply: it answers a group with
// errNotConnected while the exporter has not reached Redis yet, and hands
// it to applyGroup otherwise.
func (e *redisAnalyticsExporter) applyWhenConnected(group []*pushWaiter) {
	if err := e.notConnected(); err != nil {
		e.telemetry.ExporterRedisAnalyticsRedisErrors.Add(context.Background(), 1, e.attrs.retryable)
		answer(group, err)
		return
	}
	e.applyGroup(group)
}

// notConnected returns the retryable error of a started exporter that has
// no connection yet, with the last attempt's error; nil otherwise.
func (e *redisAnalyticsExporter) notConnected() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.runner != nil || e.connErr == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", errNotConnected, e.connErr)
}
