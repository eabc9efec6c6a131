package testservers

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a private Redis Cluster of masters without replicas, each
// a private redis-server (see StartRedis) on free loopback ports.
type RedisCluster struct {
	Nodes []*RedisServer
}

// StartRedisCluster starts masters cluster-enabled redis-servers, joins them
// with `redis-cli --cluster create` (the slots split evenly) and waits until
// every node reports cluster_state:ok. The servers are killed at cleanup.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli not found on PATH (install Debian's redis-tools): %v", err)
	}
	c := &RedisCluster{Nodes: make([]*RedisServer, masters)}
	args := []string{"--cluster", "create"}
	for i := range c.Nodes {
		// The bus port is a FreePort too: the default, port + 10000, lies
		// in the kernel's ephemeral range (see FreePort).
		c.Nodes[i] = StartRedis(t,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(FreePort(t)), "--cluster-node-timeout", "5000",
			"--appendonly", "no")
		args = append(args, c.Nodes[i].Addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil { //nolint:gosec // test-only: redis-cli with our own node addresses
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		waitReady(n.proc, n.Addr, func() error { return clusterStateOK(n.Addr) })
	}
	return c
}

// Addrs returns the nodes' addresses.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// Client returns a cluster client of every node, closed at cleanup.
func (c *RedisCluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DisableIdentity: true})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// SlotOwner returns the node that serves key's slot.
func (c *RedisCluster) SlotOwner(ctx context.Context, t testing.TB, key string) *RedisServer {
	t.Helper()
	client := c.Client(t)
	slot, err := client.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
	}
	shards, err := client.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER SHARDS: %v", err)
	}
	for _, shard := range shards {
		for _, r := range shard.Slots {
			if r.Start > slot || slot > r.End {
				continue
			}
			for _, n := range shard.Nodes {
				if n.Role != "master" {
					continue
				}
				addr := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
				for _, node := range c.Nodes {
					if node.Addr == addr {
						return node
					}
				}
				t.Fatalf("slot %d of %s is served by %s, not one of this cluster's nodes", slot, key, addr)
			}
		}
	}
	t.Fatalf("no node serves slot %d of %s", slot, key)
	return nil
}

// OtherNode returns a node of the cluster other than node.
func (c *RedisCluster) OtherNode(t testing.TB, node *RedisServer) *RedisServer {
	t.Helper()
	for _, n := range c.Nodes {
		if n != node {
			return n
		}
	}
	t.Fatal("the cluster has no other node")
	return nil
}

// clusterStateOK asks one node for CLUSTER INFO.
func clusterStateOK(addr string) error {
	client := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true, MaxRetries: -1})
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := client.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return fmt.Errorf("cluster not ready: %s", strings.SplitN(info, "\n", 2)[0])
	}
	return nil
}
