package analyticsqueryextension

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/bearertokenauthextension"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configauth"
	"go.opentelemetry.io/collector/config/confighttp"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/extension/extensiontest"
)

// TestBadRequests: every bad input is a 400 whose JSON error names the
// field and says why; nothing unknown is ignored.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.startQuery(func(c *Config) { c.MaxLimit = 50; c.MaxCells = 100 })
	tests := []struct {
		name, body, field, reason string
	}{
		{"empty body", ``, "body", "empty"},
		{"not JSON", `{"metrics":`, "body", "not valid JSON"},
		{"array body", `[]`, "body", "must be"},
		{"trailing data", `{"metrics":["events"],"date_range":"day"} {}`, "body", "one JSON object"},
		{"unknown field", `{"metrics":["events"],"date_range":"day","site_id":"x"}`, "site_id", "unknown field"},
		{"no metrics", `{"date_range":"day"}`, "metrics", "at least one"},
		{"unknown metric", `{"metrics":["events","pageviews"],"date_range":"day"}`, "metrics[1]", `unknown metric "pageviews"`},
		{"duplicate metric", `{"metrics":["events","events"],"date_range":"day"}`, "metrics[1]", "twice"},
		{"metrics not strings", `{"metrics":[1],"date_range":"day"}`, "metrics", "must be a string"},
		{"unknown dimension", `{"metrics":["events"],"date_range":"day","dimensions":["visit:source"]}`, "dimensions[0]", `unknown dimension "visit:source"`},
		{"two time dimensions", `{"metrics":["events"],"date_range":"day","dimensions":["time:day","time:hour"]}`, "dimensions[1]", "only one time dimension"},
		{"duplicate dimension", `{"metrics":["events"],"date_range":"day","dimensions":["event:name","event:name"]}`, "dimensions[1]", "twice"},
		{"no date_range", `{"metrics":["events"]}`, "date_range", "required"},
		{"unknown range", `{"metrics":["events"],"date_range":"12mo"}`, "date_range", `unknown range "12mo"`},
		{"one date", `{"metrics":["events"],"date_range":["2026-12-01"]}`, "date_range", "pair"},
		{"bad date", `{"metrics":["events"],"date_range":["2026-13-01","2026-12-02"]}`, "date_range[0]", "neither an ISO date"},
		{"mixed date and time", `{"metrics":["events"],"date_range":["2026-12-01","2026-12-02T10:00:00Z"]}`, "date_range", "not one of each"},
		{"reversed range", `{"metrics":["events"],"date_range":["2026-12-02","2026-12-01"]}`, "date_range", "after the end"},
		{"visitors by hour", `{"metrics":["visitors"],"date_range":"day","dimensions":["time:hour"]}`, "metrics[0]", "per-user data, which is daily"},
		{"visitors over hours", `{"metrics":["events","visitors"],"date_range":["2026-12-01T10:00:00Z","2026-12-01T12:00:00Z"]}`, "metrics[1]", "which is daily"},
		{"user by hour", `{"metrics":["events"],"date_range":"day","dimensions":["time:hour","event:user"]}`, "dimensions[0]", "per-user data is daily"},
		{"user filter over hours", `{"metrics":["events"],"date_range":["2026-12-01T10:00:00Z","2026-12-01T12:00:00Z"],"filters":[["is","event:user",["a"]]]}`, "date_range", "per-user data is daily"},
		{"too many buckets", `{"metrics":["events"],"date_range":["2026-01-01","2026-12-31"],"dimensions":["time:day"]}`, "date_range", "more than 100 buckets"},
		{"unknown operator", `{"metrics":["events"],"date_range":"day","filters":[["contains","event:name",["a"]]]}`, "filters[0][0]", `unknown filter operator "contains"`},
		{"or is unknown", `{"metrics":["events"],"date_range":"day","filters":[["or",[["is","event:name",["a"]]]]]}`, "filters[0][0]", `unknown filter operator "or"`},
		{"nested unknown operator", `{"metrics":["events"],"date_range":"day","filters":[["and",[["is","event:name",["a"]],["matches","event:name",["b"]]]]]}`, "filters[0][1][1][0]", `"matches"`},
		{"unknown filter attribute", `{"metrics":["events"],"date_range":"day","filters":[["is","visit:country",["FR"]]]}`, "filters[0][1]", `cannot filter on "visit:country"`},
		{"empty filter values", `{"metrics":["events"],"date_range":"day","filters":[["is","event:name",[]]]}`, "filters[0][2]", "non-empty array"},
		{"filter values not strings", `{"metrics":["events"],"date_range":"day","filters":[["is","event:name",[1]]]}`, "filters[0][2]", "non-empty array of strings"},
		{"filter not an array", `{"metrics":["events"],"date_range":"day","filters":["event:name"]}`, "filters[0]", "must be"},
		{"empty and", `{"metrics":["events"],"date_range":"day","filters":[["and",[]]]}`, "filters[0]", `"and" takes`},
		{"order by unknown", `{"metrics":["events"],"date_range":"day","order_by":[["visitors","desc"]]}`, "order_by[0][0]", "neither a metric nor a dimension"},
		{"order direction", `{"metrics":["events"],"date_range":"day","order_by":[["events","down"]]}`, "order_by[0][1]", `"asc" or "desc"`},
		{"order not a pair", `{"metrics":["events"],"date_range":"day","order_by":["events"]}`, "order_by[0]", "pair"},
		{"limit zero", `{"metrics":["events"],"date_range":"day","limit":0}`, "limit", "between 1 and 50"},
		{"limit above max_limit", `{"metrics":["events"],"date_range":"day","limit":51}`, "limit", "between 1 and 50"},
		{"limit not a number", `{"metrics":["events"],"date_range":"day","limit":"10"}`, "limit", "must be an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, resp := post(t.Context(), t, base, tt.body)
			assert.Equal(t, http.StatusBadRequest, status, resp.Error)
			assert.Equal(t, tt.field, resp.Field, resp.Error)
			assert.Contains(t, resp.Error, tt.reason)
			assert.True(t, strings.HasPrefix(resp.Error, tt.field+": "), "the message starts with the field: %s", resp.Error)
		})
	}
}

// TestRoutes: the other endpoints and methods.
func TestRoutes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t)
	base := e.startQuery(nil)
	status, body := get(ctx, t, base, "/healthz")
	assert.Equal(t, http.StatusOK, status)
	assert.JSONEq(t, `{"status":"ok"}`, string(body))
	status, _ = get(ctx, t, base, "/api/v2/query")
	assert.Equal(t, http.StatusMethodNotAllowed, status)
	status, body = get(ctx, t, base, "/api/v1/stats")
	assert.Equal(t, http.StatusNotFound, status)
	assert.Contains(t, string(body), "no such endpoint")
	status, resp := post(ctx, t, base, `{"metrics":["events","visitors"],"date_range":"7d"}`)
	require.Equal(t, http.StatusOK, status, resp.Error)
	assert.Equal(t, []string{" -> 0,0"}, resp.table(), "no dimensions: one row, zeros when nothing was counted")
}

// TestUnauthorizedWithoutToken: with "auth" naming a bearertokenauth
// extension, a request without the token gets a 401 and one with it an
// answer.
func TestUnauthorizedWithoutToken(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t)
	authID := component.MustNewID("bearertokenauth")
	f := bearertokenauthextension.NewFactory()
	cfg := f.CreateDefaultConfig().(*bearertokenauthextension.Config)
	cfg.BearerToken = configopaque.String("s3cret")
	auth, err := f.Create(ctx, extensiontest.NewNopSettings(f.Type()), cfg)
	require.NoError(t, err)
	require.NoError(t, auth.Start(ctx, e.host))
	t.Cleanup(func() { assert.NoError(t, auth.Shutdown(context.Background())) })
	e.host.exts[authID] = auth

	base := e.startQuery(func(c *Config) {
		c.ServerConfig.Auth = configoptional.Some(confighttp.AuthConfig{Config: configauth.Config{AuthenticatorID: authID}})
	})
	const body = `{"metrics":["events"],"date_range":"day"}`
	status, _ := post(ctx, t, base, body)
	assert.Equal(t, http.StatusUnauthorized, status)
	status, _ = post(ctx, t, base, body, "Authorization", "Bearer wrong")
	assert.Equal(t, http.StatusUnauthorized, status)
	status, resp := post(ctx, t, base, body, "Authorization", "Bearer s3cret")
	assert.Equal(t, http.StatusOK, status, resp.Error)
}
