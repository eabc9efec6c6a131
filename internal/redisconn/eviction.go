package redisconn

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Eviction is a server's memory limit and what it does when the limit is
// reached.
type Eviction struct {
	Server    string // the address of a cluster's master; empty otherwise
	MaxMemory string // INFO's maxmemory_human
	Policy    string // maxmemory-policy
}

// Evicting returns the servers that may evict keys: a memory limit and a
// policy other than noeviction. Every key of the components is needed until
// it is flushed or expires (counters, the pending set, batch and resource
// markers, staging entries), so an evicted key loses counts, or counts them
// twice, without a trace. With noeviction, a full Redis refuses writes
// instead: the exporter retries and clients wait, while pg_flush still
// drains it (STAGE's first write, the EXPIRE of its claim key, is not a
// deny-oom command and is allowed under OOM, and a script that has written
// may go on). A server that refuses INFO is not reported.
func Evicting(ctx context.Context, client redis.UniversalClient) ([]Eviction, error) {
	cc, ok := client.(*redis.ClusterClient)
	if !ok {
		ev, err := eviction(ctx, client)
		if err != nil || ev.Policy == "" {
			return nil, err
		}
		return []Eviction{ev}, nil
	}
	var (
		mu  sync.Mutex
		out []Eviction
	)
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		ev, err := eviction(ctx, node)
		if err != nil || ev.Policy == "" {
			return err
		}
		ev.Server = node.Options().Addr
		mu.Lock()
		defer mu.Unlock()
		out = append(out, ev)
		return nil
	})
	return out, err
}

// eviction reads INFO memory; Policy is empty when the server never evicts.
func eviction(ctx context.Context, client redis.Cmdable) (Eviction, error) {
	info, err := client.Info(ctx, "memory").Result()
	if err != nil {
		return Eviction{}, fmt.Errorf("redis INFO memory: %w", err)
	}
	var maxMemory, human, policy string
	for line := range strings.Lines(info) {
		key, value, _ := strings.Cut(strings.TrimSpace(line), ":")
		switch key {
		case "maxmemory":
			maxMemory = value
		case "maxmemory_human":
			human = value
		case "maxmemory_policy":
			policy = value
		}
	}
	if maxMemory == "" || maxMemory == "0" || policy == "" || policy == "noeviction" {
		return Eviction{}, nil
	}
	return Eviction{MaxMemory: human, Policy: policy}, nil
}

// WarnIfEvicting logs a warning for each server of client (built from c)
// that may evict keys (see Evicting), and a debug line when INFO cannot be
// read.
func (c *ClientConfig) WarnIfEvicting(ctx context.Context, client redis.UniversalClient, logger *zap.Logger) {
	evs, err := Evicting(ctx, client)
	if err != nil {
		logger.Debug("could not check Redis's maxmemory-policy", zap.String("redis", c.Describe()), zap.Error(err))
	}
	for _, ev := range evs {
		if ev.Server == "" {
			ev.Server = c.Describe()
		}
		logger.Warn("Redis may evict keys when it reaches maxmemory: an evicted counter, marker or staging entry loses counts or counts them twice, without a trace; set maxmemory-policy noeviction (a full Redis then refuses writes, which are retried, and flushes still drain it)",
			zap.String("server", ev.Server), zap.String("maxmemory", ev.MaxMemory), zap.String("maxmemory_policy", ev.Policy))
	}
}
