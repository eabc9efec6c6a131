package testservers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

const (
	defaultRedisEndpoint = "127.0.0.1:6379"
	defaultPostgresDSN   = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	connectTimeout       = 10 * time.Second
)

// RedisEndpoint is the shared Redis: $REDIS_ENDPOINT or 127.0.0.1:6379.
func RedisEndpoint() string {
	if v := os.Getenv("REDIS_ENDPOINT"); v != "" {
		return v
	}
	return defaultRedisEndpoint
}

// PostgresAdminDSN is the shared PostgreSQL's maintenance database:
// $POSTGRES_DSN or postgres://postgres@127.0.0.1:5432/postgres.
func PostgresAdminDSN() string {
	if v := os.Getenv("POSTGRES_DSN"); v != "" {
		return v
	}
	return defaultPostgresDSN
}

// UniqueName returns prefix followed by 12 random hex digits.
func UniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// SharedRedis connects to the shared Redis and returns a client and a key
// prefix no other test uses. Keys under the prefix are deleted at cleanup.
func SharedRedis(t testing.TB) (client *redis.Client, prefix string) {
	t.Helper()
	endpoint := RedisEndpoint()
	client = redis.NewClient(&redis.Options{Addr: endpoint, DisableIdentity: true})
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		t.Fatalf("shared Redis at %s is not reachable (run `make test`, which starts it): %v", endpoint, err)
	}
	prefix = UniqueName("test-")
	t.Cleanup(func() {
		deleteKeys(t, client, prefix+":*")
		_ = client.Close()
	})
	return client, prefix
}

func deleteKeys(t testing.TB, client *redis.Client, pattern string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	iter := client.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		client.Del(ctx, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Logf("cleanup of %s: %v", pattern, err)
	}
}

// FreshDatabase creates an empty database on the shared PostgreSQL and
// returns its DSN; the database is dropped at cleanup.
func FreshDatabase(t testing.TB) string {
	t.Helper()
	return createDatabase(t, PostgresAdminDSN())
}

func createDatabase(t testing.TB, adminDSN string) string {
	t.Helper()
	name := UniqueName("test_")
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Fatalf("PostgreSQL at %s is not reachable (run `make test`, which starts it): %v", redactDSN(adminDSN), err)
	}
	defer admin.Close(context.Background())
	if _, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		defer cancel()
		conn, connErr := pgx.Connect(ctx, adminDSN)
		if connErr != nil {
			t.Logf("drop database %s: %v", name, connErr)
			return
		}
		defer conn.Close(context.Background())
		if _, dropErr := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); dropErr != nil {
			t.Logf("drop database %s: %v", name, dropErr)
		}
	})
	u, err := url.Parse(adminDSN)
	if err != nil {
		t.Fatalf("admin DSN must be a URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}
