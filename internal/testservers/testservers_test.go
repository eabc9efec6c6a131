package testservers

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestPrivateRedisSurvivesRestart(t *testing.T) {
	t.Parallel()
	srv := StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, DisableIdentity: true})
	defer client.Close()
	ctx := t.Context()
	require.NoError(t, client.IncrBy(ctx, "k", 5).Err())
	srv.Kill()
	require.Error(t, client.Ping(ctx).Err())
	srv.Start()
	require.Equal(t, "5", client.Get(ctx, "k").Val(), "AOF with appendfsync always keeps acknowledged writes")
}

func TestPrivatePostgresRestart(t *testing.T) {
	t.Parallel()
	srv := StartPostgres(t)
	dsn := srv.FreshDatabase(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
	require.NoError(t, err)
	_ = conn.Close(context.Background())
	srv.Kill()
	srv.Start()
	conn, err = pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var v int
	require.NoError(t, conn.QueryRow(ctx, "SELECT v FROM t").Scan(&v))
	require.Equal(t, 7, v)
}

func TestShared(t *testing.T) {
	t.Parallel()
	client, prefix := SharedRedis(t)
	require.NoError(t, client.Set(t.Context(), prefix+":x", 1, 0).Err())
	dsn := FreshDatabase(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	require.NoError(t, err)
	require.NoError(t, conn.Ping(t.Context()))
	_ = conn.Close(context.Background())
}
