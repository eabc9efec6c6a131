package redisconn

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// incrScript stands for the components' writing scripts.
var incrScript = NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)

// replicatedPair starts a private master with one replica and returns a
// started client of the master whose writes wait for that replica.
func replicatedPair(t *testing.T, waitTimeout time.Duration) (master, replica *testservers.RedisServer, runner *ScriptRunner, client redis.UniversalClient) {
	t.Helper()
	master = testservers.StartRedis(t)
	replica = testservers.StartRedisReplica(t, master)
	cfg := NewDefaultClientConfig()
	cfg.Endpoint, cfg.WaitReplicas, cfg.WaitTimeout = master.Addr, 1, waitTimeout
	require.NoError(t, cfg.Validate())
	client = connect(t, &cfg)
	return master, replica, cfg.NewScriptRunner(client), client
}

// connect returns a client of cfg, closed at cleanup.
func connect(t *testing.T, cfg *ClientConfig) redis.UniversalClient {
	t.Helper()
	client, err := cfg.NewClient(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func TestScriptRunnerWaitsForReplicas(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	master, replica, runner, client := replicatedPair(t, 2*time.Second)
	replicaClient := replica.Client(t)
	require.True(t, runner.WaitsForReplicas())

	// Acknowledged by the replica: it holds the write when Run returns.
	n, err := runner.Run(ctx, incrScript, []string{"k"}, 5).Int64()
	require.NoError(t, err)
	assert.Equal(t, int64(5), n)
	assert.Equal(t, "5", replicaClient.Get(ctx, "k").Val())

	// A replica that acknowledges nothing: the master applied the write, the
	// caller sees a retryable ErrNotReplicated after wait_timeout.
	replica.Pause()
	start := time.Now()
	err = runner.Run(ctx, incrScript, []string{"k"}, 1).Err()
	require.ErrorIs(t, err, ErrNotReplicated)
	require.ErrorContains(t, err, "0 of 1 replicas within 2s")
	assert.GreaterOrEqual(t, time.Since(start), 2*time.Second)
	assert.Equal(t, "6", client.Get(ctx, "k").Val(), "applied on the master")
	replica.Resume()
	master.WaitReplicasAcked(t)

	// After a SCRIPT FLUSH, EVALSHA gets NOSCRIPT and the runner sends EVAL,
	// still followed by WAIT.
	require.NoError(t, client.ScriptFlush(ctx).Err())
	n, err = runner.Run(ctx, incrScript, []string{"k"}, 4).Int64()
	require.NoError(t, err)
	assert.Equal(t, int64(10), n)
	assert.Equal(t, "10", replicaClient.Get(ctx, "k").Val())
}

func TestScriptRunnerWithoutReplicasDoesNotWait(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	master := testservers.StartRedis(t)
	cfg := NewDefaultClientConfig()
	cfg.Endpoint = master.Addr
	client := connect(t, &cfg)
	var sent []string
	client.AddHook(cmdNames{&sent})
	runner := cfg.NewScriptRunner(client)
	require.False(t, runner.WaitsForReplicas())
	require.NoError(t, incrScript.Load(ctx, client).Err())
	sent = nil
	require.NoError(t, runner.Run(ctx, incrScript, []string{"k"}, 1).Err())
	assert.Equal(t, []string{"evalsha"}, sent, "no WAIT")

	// With wait_replicas and no replica, every write fails after wait_timeout.
	cfg.WaitReplicas, cfg.WaitTimeout = 1, 50*time.Millisecond
	sent = nil
	waiting := cfg.NewScriptRunner(client)
	err := waiting.Run(ctx, incrScript, []string{"k"}, 1).Err()
	require.ErrorIs(t, err, ErrNotReplicated)
	assert.Equal(t, []string{"evalsha", "wait"}, sent, "one pipeline: the script, then WAIT")
	require.ErrorIs(t, waiting.Run(ctx, incrScript, nil).Err(), errNoKeys, "an error, not a panic")
}

// TestScriptRunnerWaitsInCluster checks the cluster path: the script and WAIT
// go to the master of the key's slot in one pipeline, through the caller's
// hooks. The cluster has no replicas, so WAIT must report 0 of 1.
func TestScriptRunnerWaitsInCluster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cluster := testservers.StartRedisCluster(t, 3)
	cfg := NewDefaultClientConfig()
	cfg.Endpoint, cfg.Cluster = cluster.Addrs()[0], true
	cfg.WaitReplicas, cfg.WaitTimeout = 1, 50*time.Millisecond
	client, err := cfg.NewClient(ctx)
	require.NoError(t, err)
	defer client.Close()
	var sent []string
	hook := cmdNames{&sent}
	client.AddHook(hook)
	runner := cfg.NewScriptRunner(client, hook)

	for _, key := range []string{"{a}k", "{b}k", "{c}k"} { // slots on different nodes
		// The node does not know the script yet: NOSCRIPT, then EVAL.
		sent = nil
		err = runner.Run(ctx, incrScript, []string{key}, 1).Err()
		require.ErrorIs(t, err, ErrNotReplicated, key)
		assert.Equal(t, []string{"evalsha", "wait", "eval", "wait"}, sent, key)
		sent = nil
		err = runner.Run(ctx, incrScript, []string{key}, 1).Err()
		require.ErrorIs(t, err, ErrNotReplicated, key)
		assert.Equal(t, []string{"evalsha", "wait"}, sent, key)
		assert.Equal(t, "2", client.Get(ctx, key).Val(), "applied on the slot's master")
	}
}

// cmdNames records the names of the script and WAIT commands sent, single
// or pipelined (not go-redis' own connection set-up, such as HELLO).
type cmdNames struct{ names *[]string }

func (h cmdNames) record(cmd redis.Cmder) {
	switch name := cmd.Name(); name {
	case "evalsha", "eval", "wait":
		*h.names = append(*h.names, name)
	default:
	}
}

func (cmdNames) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h cmdNames) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.record(cmd)
		return next(ctx, cmd)
	}
}

func (h cmdNames) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.record(c)
		}
		return next(ctx, cmds)
	}
}

func TestNewClientFindsMasterThroughSentinel(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	master := testservers.StartRedis(t)
	sentinel := testservers.StartRedisSentinel(t, master, "m", 0)
	cfg := NewDefaultClientConfig()
	cfg.Endpoint = "127.0.0.1:1" // not used with a sentinel
	cfg.Sentinel.MasterName, cfg.Sentinel.Endpoints = "m", []string{sentinel.Addr}
	require.NoError(t, cfg.Validate())
	client, err := cfg.NewClient(ctx)
	require.NoError(t, err)
	defer client.Close()
	require.NoError(t, client.Set(ctx, "via-sentinel", "1", 0).Err())
	assert.Equal(t, "1", master.Client(t).Get(ctx, "via-sentinel").Val())

	cfg.Sentinel.MasterName = "unknown"
	_, err = cfg.NewClient(ctx)
	require.ErrorContains(t, err, `redis ping master "unknown" via sentinels `+sentinel.Addr)
}
