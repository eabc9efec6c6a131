package pgflushextension

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStagingAgesUseRedisClock: STAGE stamps a staging entry with Redis's
// clock and recovery measures its age by Redis's clock too, so a collector
// whose clock is off neither stamps an entry wrongly nor recovers one during
// its grace period. The collectors' clocks are skewed through flusher.now.
func TestStagingAgesUseRedisClock(t *testing.T) {
	t.Parallel()
	skewed := func(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }

	t.Run("stager's clock a day behind", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		env := newTestEnv(t)
		require.NoError(t, env.write(ctx, awkwardIncrements()...))
		f := env.start(env.config())
		f.now = skewed(-24 * time.Hour)
		var staged []redis.Z // read by the stager, after its STAGE
		f.failpoint = func(step string) {
			if step == stepAfterStage {
				staged = env.rdb.ZRangeWithScores(ctx, env.schema.StagingIndexKey(), 0, -1).Val()
			}
		}
		_, err := f.flush(ctx)
		require.NoError(t, err)
		require.Len(t, staged, 1)
		assert.InDelta(t, float64(env.redisTime(ctx).UnixMilli()), staged[0].Score, float64(time.Minute.Milliseconds()),
			"the entry is stamped with Redis's clock")
	})

	tests := []struct {
		name          string
		skew          time.Duration // of the recovering collector's clock
		age           time.Duration // of the entry, by Redis's clock
		wantRecovered bool
	}{
		// By its own clock the entry is 3 h old, past the 1 h grace period.
		{name: "recoverer's clock ahead, entry within grace", skew: 3 * time.Hour, age: 0},
		// By its own clock the entry was staged 1 h in the future.
		{name: "recoverer's clock behind, entry past grace", skew: -3 * time.Hour, age: 2 * time.Hour, wantRecovered: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			env := newTestEnv(t)
			incs := awkwardIncrements()
			require.NoError(t, env.write(ctx, incs...))
			env.stageAged(ctx, env.redisStore(), tt.age)

			f := env.start(env.config())
			f.now = skewed(tt.skew)
			f.grace = time.Hour
			st, err := f.flush(ctx)
			require.NoError(t, err)
			if tt.wantRecovered {
				want := totals{}
				want.add(incs...)
				assert.Equal(t, 1, st.recovered)
				assert.Equal(t, want, env.readTotals(ctx))
				env.requireRedisEmpty(ctx)
			} else {
				assert.Zero(t, st.recovered)
				assert.Empty(t, env.readTotals(ctx))
				assert.Equal(t, int64(1), env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val(), "left staged")
			}
		})
	}
}
