package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// aclRules grants what both components need and nothing more: the keys
// under the prefix, and the commands they send or their scripts run
// (README, Redis ACL; TestREADMEListsTheACLRules keeps the two in step).
// Some only run on rarer paths (WAIT with wait_replicas, HGETALL in a
// recovery, DECRBY and DEL when a batch is undone, DEL also when a client
// resends counted entries, HINCRBY when a flush quarantines a count it
// cannot store); removing any of the others fails this test.
const (
	aclRules = "-@all +ping +info +evalsha +eval +wait " +
		"+zcard +zrange +zcount +hgetall +mget +sismember +scard +sadd +srem +smembers " +
		"+getdel +incrby +decrby +hincrby +set +hset +expire +exists +type +del +unlink +zadd +zpopmin +zrem +time"
	// aclClusterRules: what a Redis Cluster client needs on top (the slot map,
	// and COMMAND, which go-redis reads to route commands).
	aclClusterRules = "+cluster|slots +command"
)

// TestDistroWithRedisACLUser runs the distro as a Redis ACL user that holds
// only aclRules on the prefix's keys, on a standalone server whose default
// user needs a password and on a Redis Cluster: every event is counted and
// flushed exactly, and Redis denied nothing (its ACL LOG stays empty).
func TestDistroWithRedisACLUser(t *testing.T) {
	t.Parallel()
	const user, userPassword = "otelcol", "collector-secret"
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		const prefix, adminPassword = "e2e-acl", "admin-secret"
		srv := testservers.StartRedis(t)
		setup := srv.Client(t)
		require.NoError(t, setup.Do(ctx, aclSetUser(user, userPassword, prefix, aclRules)...).Err())
		require.NoError(t, setup.Do(ctx, "ACL", "SETUSER", "default", "resetpass", ">"+adminPassword).Err())
		admin := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: adminPassword, DisableIdentity: true})
		t.Cleanup(func() { _ = admin.Close() })
		runAsACLUser(t, admin, []*redis.Client{admin}, prefix, distroEnv{
			RedisEndpoint: srv.Addr,
			Env:           []string{"REDIS_USERNAME=" + user, "REDIS_PASSWORD=" + userPassword},
		})
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		const prefix = "{e2e-acl}"
		cluster := testservers.StartRedisCluster(t, 3)
		nodes := make([]*redis.Client, 0, len(cluster.Nodes))
		for _, n := range cluster.Nodes {
			c := n.Client(t)
			require.NoError(t, c.Do(ctx, aclSetUser(user, userPassword, prefix, aclRules+" "+aclClusterRules)...).Err())
			nodes = append(nodes, c)
		}
		runAsACLUser(t, cluster.Client(t), nodes, prefix, distroEnv{
			RedisEndpoint: cluster.Nodes[0].Addr,
			Env:           []string{"REDIS_CLUSTER=true", "REDIS_USERNAME=" + user, "REDIS_PASSWORD=" + userPassword},
		})
	})
}

// aclSetUser is the ACL SETUSER command that creates user with password,
// the prefix's keys and rules.
func aclSetUser(user, password, prefix, rules string) []any {
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + password, "~" + prefix + ":*"}
	for r := range strings.FieldsSeq(rules) {
		args = append(args, r)
	}
	return args
}

// runAsACLUser runs the distro with env (the ACL user's credentials) against
// the servers of nodes, sends logs and spans, waits for a flush tick, stops
// it, and checks exact totals, the user on the connections and an empty ACL
// LOG on every node.
func runAsACLUser(t *testing.T, rdb redis.Cmdable, nodes []*redis.Client, prefix string, env distroEnv) {
	t.Helper()
	ctx := t.Context()
	for _, n := range nodes {
		require.NoError(t, n.Do(ctx, "ACL", "LOG", "RESET").Err())
	}
	env.PostgresDSN, env.KeyPrefix, env.FlushInterval = testservers.FreshDatabase(t), prefix, 200*time.Millisecond
	d := startDistro(t, env)
	exp := newExpected()
	for seed := range 3 {
		sendLogs(ctx, t, d, 600, seed, exp)
		sendTraces(ctx, t, d, 300, seed, exp)
	}
	waitFor(t, 30*time.Second, 20*time.Millisecond, "a flush tick moves counts", func() bool {
		return len(tableRows(ctx, t, env.PostgresDSN).daily) > 0
	})
	var users strings.Builder
	for _, n := range nodes {
		clients, err := n.ClientList(ctx).Result()
		require.NoError(t, err)
		users.WriteString(clients)
	}
	assert.Contains(t, users.String(), "user=otelcol", "the collector authenticates as the ACL user")
	d.stop()

	assertFlushedExactly(ctx, t, rdb, env.PostgresDSN, prefix, exp)
	for _, n := range nodes {
		denied, err := n.Do(ctx, "ACL", "LOG").Slice()
		require.NoError(t, err)
		assert.Empty(t, denied, "Redis denied a command or key of the collector")
	}
	assert.NotContains(t, d.output(), "collector-secret", "the password is never logged")
}

// TestDistroRefusesWrongRedisPassword: with a wrong password the distro does
// not start, and its error names the server, not the password.
func TestDistroRefusesWrongRedisPassword(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testservers.StartRedis(t)
	require.NoError(t, srv.Client(t).Do(ctx, "ACL", "SETUSER", "default", "resetpass", ">right-secret").Err())
	const wrong = "wrong-secret"
	d := launchDistro(t, distroEnv{
		RedisEndpoint: srv.Addr, PostgresDSN: testservers.FreshDatabase(t), KeyPrefix: "e2e-wrongpass", FlushInterval: time.Second,
		Env: []string{"REDIS_PASSWORD=" + wrong},
	})
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("collector still running with a wrong password:\n%s", d.output())
	}
	require.Error(t, d.waitErr, "the collector fails")
	out := d.output()
	assert.Contains(t, out, "redis ping "+srv.Addr)
	assert.Contains(t, out, "WRONGPASS")
	assert.NotContains(t, out, wrong)
}

// TestREADMEListsTheACLRules: the ACL SETUSER line that the README gives
// users grants exactly the rules TestDistroWithRedisACLUser runs with.
func TestREADMEListsTheACLRules(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	require.NoError(t, err)
	var line string
	for l := range strings.Lines(string(readme)) {
		if strings.HasPrefix(l, "ACL SETUSER otelcol ") {
			line = l
		}
	}
	require.NotEmpty(t, line, "README has no ACL SETUSER otelcol line")
	_, rules, ok := strings.Cut(line, " resetchannels ")
	require.True(t, ok, line)
	assert.Equal(t, strings.Fields(aclRules), strings.Fields(rules))
	assert.Contains(t, string(readme), "add `"+aclClusterRules+"`")
}
