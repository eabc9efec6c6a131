package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// queryByType asks the distro's analytics_query API for the events per type
// and per user and type over all time, and returns them keyed like expected
// (type, user|type).
func queryByType(ctx context.Context, t testing.TB, d *distro) (perType, perUser map[string]int64) {
	t.Helper()
	read := func(body string, key func([]string) string) map[string]int64 {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.queryURL+"/api/v2/query", bytes.NewBufferString(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
		var r struct {
			Results []struct {
				Dimensions []string `json:"dimensions"`
				Metrics    []int64  `json:"metrics"`
			} `json:"results"`
		}
		require.NoError(t, json.Unmarshal(raw, &r))
		out := map[string]int64{}
		for _, row := range r.Results {
			out[key(row.Dimensions)] = row.Metrics[0]
		}
		return out
	}
	perType = read(`{"metrics":["events"],"dimensions":["event:name"],"date_range":"all"}`, func(d []string) string { return d[0] })
	perUser = read(`{"metrics":["events"],"dimensions":["event:user","event:name"],"date_range":"all"}`, func(d []string) string { return d[0] + "|" + d[1] })
	return perType, perUser
}

// sumBy folds expected rows "a|b|date" into their first fields.
func sumBy(rows map[string]int64, fields int) map[string]int64 {
	out := map[string]int64{}
	for k, v := range rows {
		parts := strings.Split(k, "|")
		out[strings.Join(parts[:fields], "|")] += v
	}
	return out
}

// TestDistroQueryAPI: the sample config serves the query API, whose answers
// are exact while the counts wait in Redis and once pg_flush moved them.
func TestDistroQueryAPI(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := testservers.SharedRedis(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: testservers.FreshDatabase(t), KeyPrefix: prefix,
		FlushInterval: 200 * time.Millisecond,
	})
	exp := newExpected()
	for seed := range 3 {
		sendLogs(ctx, t, d, 300, seed, exp)
		sendTraces(ctx, t, d, 150, seed, exp)
	}
	wantType := map[string]int64{}
	for k, v := range exp.daily {
		wantType[strings.Split(k, "|")[0]] += v
	}
	wantUser := sumBy(exp.userDaily, 2)
	perType, perUser := queryByType(ctx, t, d)
	assert.Equal(t, wantType, perType, "exact at once, wherever the counts are")
	assert.Equal(t, wantUser, perUser)

	waitFor(t, 30*time.Second, 20*time.Millisecond, "pg_flush drains Redis", func() bool {
		return rdb.ZCard(ctx, prefix+":pending").Val() == 0 && rdb.ZCard(ctx, prefix+":staging").Val() == 0
	})
	perType, perUser = queryByType(ctx, t, d)
	assert.Equal(t, wantType, perType, "exact from PostgreSQL")
	assert.Equal(t, wantUser, perUser)

	resp, err := http.Get(d.queryURL + "/healthz") //nolint:noctx // loopback
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}
