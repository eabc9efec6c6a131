package redisconn

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated is returned when the master applied a write but fewer
// replicas than wait_replicas acknowledged it within wait_timeout. It is
// retryable: the components' scripts make a re-run of the same write a no-op
// that touches a key, so the retry's WAIT covers the first run's writes too
// (a replica acknowledges a replication offset, and the stream is ordered).
var ErrNotReplicated = errors.New("write not acknowledged by enough replicas")

// errNoKeys: a script run through a waiting runner needs a key, which picks
// the node in a cluster.
var errNoKeys = errors.New("redis script without keys: cannot wait for replicas")

// Script is a Lua script that the components run through a ScriptRunner. It
// keeps its source for EVAL after a NOSCRIPT.
type Script struct {
	*redis.Script
	src string
}

// NewScript returns the script of src.
func NewScript(src string) *Script {
	return &Script{Script: redis.NewScript(src), src: src}
}

// ScriptRunner runs the components' writing scripts and, with wait_replicas,
// makes each wait for its replicas.
type ScriptRunner struct {
	client   redis.UniversalClient
	replicas int
	timeout  time.Duration
	// hooks wrap the per-node pipeline of a cluster client, which the
	// cluster client's own hooks do not see (see exec).
	hooks []redis.Hook
}

// NewScriptRunner returns the runner of c's wait settings over client. hooks
// are the hooks the caller added to client; they are only needed with a
// cluster client.
func (c *ClientConfig) NewScriptRunner(client redis.UniversalClient, hooks ...redis.Hook) *ScriptRunner {
	return &ScriptRunner{client: client, replicas: c.WaitReplicas, timeout: c.WaitTimeout, hooks: hooks}
}

// WaitsForReplicas reports whether writes wait for replicas.
func (r *ScriptRunner) WaitsForReplicas() bool { return r.replicas > 0 }

// Run runs s like redis.Script.Run (EVALSHA, then EVAL on NOSCRIPT). With
// wait_replicas, WAIT follows the script on the same connection in the same
// round trip, and a reply with fewer replicas than required turns into an
// ErrNotReplicated error on the returned command. Every key of one script
// is in one slot; keys[0] picks the node in a cluster.
func (r *ScriptRunner) Run(ctx context.Context, s *Script, keys []string, args ...any) *redis.Cmd {
	if r.replicas == 0 {
		return s.Run(ctx, r.client, keys, args...)
	}
	if len(keys) == 0 {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errNoKeys)
		return cmd
	}
	cmd := r.runAndWait(ctx, "evalsha", s.Hash(), keys, args)
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		cmd = r.runAndWait(ctx, "eval", s.src, keys, args)
	}
	return cmd
}

func (r *ScriptRunner) runAndWait(ctx context.Context, verb, body string, keys []string, args []any) *redis.Cmd {
	cmdArgs := make([]any, 0, 3+len(keys)+len(args))
	cmdArgs = append(cmdArgs, verb, body, len(keys))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	cmdArgs = append(cmdArgs, args...)
	cmd := redis.NewCmd(ctx, cmdArgs...)
	wait := redis.NewIntCmd(ctx, "wait", r.replicas, r.timeout.Milliseconds())
	if err := r.exec(ctx, keys[0], []redis.Cmder{cmd, wait}); err != nil && cmd.Err() == nil {
		cmd.SetErr(err)
	}
	if cmd.Err() != nil {
		return cmd
	}
	n, err := wait.Result()
	switch {
	case err != nil:
		cmd.SetErr(fmt.Errorf("WAIT for %d replicas: %w", r.replicas, err))
	case n < int64(r.replicas):
		cmd.SetErr(fmt.Errorf("%w: %d of %d replicas within %s", ErrNotReplicated, n, r.replicas, r.timeout))
	}
	return cmd
}

// exec sends cmds as one pipeline on one connection, as WAIT needs: it
// waits for the replication offset of its own connection's last write. A
// cluster client would route the keyless WAIT to any node, so with one the
// pipeline goes to the master of key's slot directly; a stale slot map shows
// as MOVED, which reloads it for the retry.
func (r *ScriptRunner) exec(ctx context.Context, key string, cmds []redis.Cmder) error {
	cc, ok := r.client.(*redis.ClusterClient)
	if !ok {
		_, err := r.client.Pipelined(ctx, queue(ctx, cmds))
		return err
	}
	node, err := cc.MasterForKey(ctx, key)
	if err != nil {
		return err
	}
	send := func(ctx context.Context, cmds []redis.Cmder) error {
		_, sendErr := node.Pipelined(ctx, queue(ctx, cmds))
		return sendErr
	}
	for _, h := range slices.Backward(r.hooks) {
		send = h.ProcessPipelineHook(send)
	}
	err = send(ctx, cmds)
	if redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK") {
		cc.ReloadState(ctx)
	}
	return err
}

// queue returns a pipeline function that queues cmds.
func queue(ctx context.Context, cmds []redis.Cmder) func(redis.Pipeliner) error {
	return func(p redis.Pipeliner) error {
		for _, c := range cmds {
			if err := p.Process(ctx, c); err != nil {
				return err
			}
		}
		return nil
	}
}
