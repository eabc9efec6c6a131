package grafana_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.yaml.in/yaml/v3"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension"
)

const (
	datasourceFile = "provisioning/datasources/otelcol-analytics.yaml"
	providerFile   = "provisioning/dashboards/otelcol-analytics.yaml"
	dashboardFile  = "provisioning/dashboards/otelcol-analytics.json"
	// provisioningDir is where the README mounts or copies provisioning/.
	provisioningDir = "/etc/grafana/provisioning"
)

// dashboard is the part of Grafana's dashboard model the tests read.
type dashboard struct {
	UID        string `json:"uid"`
	Timezone   string `json:"timezone"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Datasource dsRef  `json:"datasource"`
	Query      string `json:"query"`
	Multi      bool   `json:"multi"`
	IncludeAll bool   `json:"includeAll"`
	AllValue   string `json:"allValue"`
}

type panel struct {
	Title      string `json:"title"`
	Datasource dsRef  `json:"datasource"`
	// Interval is the panel's min interval ("1h"); $__interval is at least it.
	Interval string `json:"interval"`
	Targets  []struct {
		RefID      string `json:"refId"`
		Datasource dsRef  `json:"datasource"`
		RawSQL     string `json:"rawSql"`
		Format     string `json:"format"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d))
	return d
}

func (d dashboard) panel(t *testing.T, title string) panel {
	t.Helper()
	for _, p := range d.Panels {
		if p.Title == title {
			require.Len(t, p.Targets, 1, "panel %q", title)
			return p
		}
	}
	t.Fatalf("no panel %q", title)
	return panel{}
}

// TestProvisioning: the provisioning files parse, the datasource has a
// placeholder for every connection setting, the dashboard provider loads
// the directory that holds the dashboard, and every query of the dashboard
// uses the provisioned datasource.
func TestProvisioning(t *testing.T) {
	t.Parallel()
	var datasources struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name           string            `yaml:"name"`
			UID            string            `yaml:"uid"`
			Type           string            `yaml:"type"`
			URL            string            `yaml:"url"`
			User           string            `yaml:"user"`
			JSONData       map[string]any    `yaml:"jsonData"`
			SecureJSONData map[string]string `yaml:"secureJsonData"`
		} `yaml:"datasources"`
	}
	readYAML(t, datasourceFile, &datasources)
	assert.Equal(t, 1, datasources.APIVersion)
	require.Len(t, datasources.Datasources, 1)
	ds := datasources.Datasources[0]
	assert.Equal(t, "grafana-postgresql-datasource", ds.Type)
	assert.Equal(t, "${ANALYTICS_PG_HOST}", ds.URL)
	assert.Equal(t, "${ANALYTICS_PG_USER}", ds.User)
	assert.Equal(t, "${ANALYTICS_PG_DATABASE}", ds.JSONData["database"])
	assert.Equal(t, "${ANALYTICS_PG_SSLMODE}", ds.JSONData["sslmode"])
	assert.Equal(t, "${ANALYTICS_PG_PASSWORD}", ds.SecureJSONData["password"])

	var providers struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, providerFile, &providers)
	assert.Equal(t, 1, providers.APIVersion)
	require.Len(t, providers.Providers, 1)
	assert.Equal(t, "file", providers.Providers[0].Type)
	// The provider's path, seen from Grafana, is the dashboard's directory.
	rel, err := filepath.Rel(provisioningDir, providers.Providers[0].Options.Path)
	require.NoError(t, err)
	assert.Equal(t, filepath.Dir(dashboardFile), filepath.Join("provisioning", rel))

	d := loadDashboard(t)
	assert.NotEmpty(t, d.UID)
	assert.Equal(t, "utc", d.Timezone, "daily rows are UTC days")
	want := dsRef{Type: ds.Type, UID: ds.UID}
	require.Len(t, d.Templating.List, 1)
	assert.Equal(t, want, d.Templating.List[0].Datasource)
	require.NotEmpty(t, d.Panels)
	for _, p := range d.Panels {
		assert.Equal(t, want, p.Datasource, p.Title)
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			assert.Equal(t, want, tg.Datasource, p.Title)
			assert.Contains(t, []string{"time_series", "table"}, tg.Format, p.Title)
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, v), path)
}

// Known rows. The time range of the test runs from 06:00 on 1 March to 18:00
// on 3 March (UTC); rows just outside it must not show.
var (
	dailyRows = []struct {
		eventType, date string
		count           int64
	}{
		{"page_view", "2026-02-28", 1000}, // the day before the range
		{"page_view", "2026-03-01", 10},
		{"page_view", "2026-03-02", 20},
		{"page_view", "2026-03-03", 5},
		{"page_view", "2026-03-04", 2000}, // the day after
		{"user_signup", "2026-03-02", 3},
		{"it's", "2026-03-01", 7}, // a quote in a variable value
	}
	hourlyRows = []struct {
		eventType, hour string
		count           int64
	}{
		{"page_view", "2026-03-01T05:00:00Z", 100}, // before the range
		{"page_view", "2026-03-01T06:00:00Z", 1},   // at its start
		{"page_view", "2026-03-01T07:00:00Z", 2},
		{"user_signup", "2026-03-01T07:00:00Z", 3},
		{"it's", "2026-03-02T23:00:00Z", 4},
		{"page_view", "2026-03-03T18:00:00Z", 5},   // at its end
		{"page_view", "2026-03-03T19:00:00Z", 200}, // after
	}
	userRows = []struct {
		user, eventType, date string
		count                 int64
	}{
		{"alice", "page_view", "2026-03-01", 5},
		{"alice", "user_signup", "2026-03-01", 1},
		{"alice", "page_view", "2026-03-03", 1},
		{"bob", "page_view", "2026-03-02", 4},
		{"carol", "page_view", "2026-02-25", 9}, // in the 7 days before 3 March
		{"dave", "it's", "2026-02-01", 2},       // in the 30 days up to 2 March, not 3 March
		{"erin", "page_view", "2026-01-30", 50}, // in no 30-day window of the range
		{"frank", "page_view", "2026-03-04", 100},
		{"o'neil", "user_signup", "2026-03-02", 2},
	}
)

// TestDashboardQueries runs every query of the dashboard, its macros
// expanded as Grafana does (expand), against tables that pg_flush created,
// holding the known rows, and checks each result row by row. The session
// runs in a time zone other than UTC, so the results cannot depend on the
// server's time zone.
func TestDashboardQueries(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := databaseWithKnownRows(t)
	d := loadDashboard(t)

	// The variable: every event type, whatever the time range.
	require.Len(t, d.Templating.List, 1)
	v := d.Templating.List[0]
	require.Equal(t, "event_type", v.Name)
	require.True(t, v.Multi)
	require.True(t, v.IncludeAll)
	require.Empty(t, v.AllValue, "All expands to every value")
	sql, err := expand(v.Query, grafanaQuery{})
	require.NoError(t, err)
	all := run(ctx, t, conn, sql)
	require.Equal(t, [][]string{{"it's"}, {"page_view"}, {"user_signup"}}, all)
	allTypes := make([]string, len(all))
	for i, row := range all {
		allTypes[i] = row[0]
	}

	from := time.Date(2026, 3, 1, 6, 0, 0, 0, time.UTC)
	to := time.Date(2026, 3, 3, 18, 0, 0, 0, time.UTC)
	hourlyPanel := d.panel(t, "Events per hour")
	minInterval, err := parseInterval(hourlyPanel.Interval)
	require.NoError(t, err)
	require.Equal(t, time.Hour, minInterval)

	tests := []struct {
		name     string
		types    []string
		interval time.Duration
		want     map[string][][]string // panel title -> rows
	}{
		{
			name:     "all types, hourly",
			types:    allTypes,
			interval: minInterval,
			want: map[string][][]string{
				"Events per day": {
					{"2026-03-01T00:00:00Z", "it's", "7"},
					{"2026-03-01T00:00:00Z", "page_view", "10"},
					{"2026-03-02T00:00:00Z", "page_view", "20"},
					{"2026-03-02T00:00:00Z", "user_signup", "3"},
					{"2026-03-03T00:00:00Z", "page_view", "5"},
				},
				"Events in range by type": {{"page_view", "35"}, {"it's", "7"}, {"user_signup", "3"}},
				"Events per hour": {
					{"2026-03-01T06:00:00Z", "page_view", "1"},
					{"2026-03-01T07:00:00Z", "page_view", "2"},
					{"2026-03-01T07:00:00Z", "user_signup", "3"},
					{"2026-03-02T23:00:00Z", "it's", "4"},
					{"2026-03-03T18:00:00Z", "page_view", "5"},
				},
				"Active users (DAU / WAU / MAU)": {
					{"2026-03-01T00:00:00Z", "1", "2", "3"}, // alice; + carol; + dave
					{"2026-03-02T00:00:00Z", "2", "4", "5"}, // bob, o'neil; + alice, carol; + dave
					{"2026-03-03T00:00:00Z", "1", "4", "4"}, // alice; + carol, bob, o'neil; dave out
				},
				"Top users": {
					{"alice", "7", "2", "2026-03-03T00:00:00Z"},
					{"bob", "4", "1", "2026-03-02T00:00:00Z"},
					{"o'neil", "2", "1", "2026-03-02T00:00:00Z"},
				},
			},
		},
		{
			name:     "two types, a day per bucket",
			types:    []string{"page_view", "it's"},
			interval: 24 * time.Hour,
			want: map[string][][]string{
				"Events per day": {
					{"2026-03-01T00:00:00Z", "it's", "7"},
					{"2026-03-01T00:00:00Z", "page_view", "10"},
					{"2026-03-02T00:00:00Z", "page_view", "20"},
					{"2026-03-03T00:00:00Z", "page_view", "5"},
				},
				"Events in range by type": {{"page_view", "35"}, {"it's", "7"}},
				"Events per hour": {
					{"2026-03-01T00:00:00Z", "page_view", "3"},
					{"2026-03-02T00:00:00Z", "it's", "4"},
					{"2026-03-03T00:00:00Z", "page_view", "5"},
				},
				"Active users (DAU / WAU / MAU)": {
					{"2026-03-01T00:00:00Z", "1", "2", "3"}, // alice; + carol; + dave
					{"2026-03-02T00:00:00Z", "1", "3", "4"}, // bob; + alice, carol; + dave
					{"2026-03-03T00:00:00Z", "1", "3", "3"}, // alice; + carol, bob; dave out
				},
				"Top users": {
					{"alice", "6", "2", "2026-03-03T00:00:00Z"},
					{"bob", "4", "1", "2026-03-02T00:00:00Z"},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := grafanaQuery{from: from, to: to, interval: tt.interval, vars: map[string][]string{"event_type": tt.types}}
			require.Len(t, d.Panels, len(tt.want), "a panel without expected rows")
			for _, p := range d.Panels {
				want, ok := tt.want[p.Title]
				require.True(t, ok, "no expected rows for panel %q", p.Title)
				sql, err := expand(d.panel(t, p.Title).Targets[0].RawSQL, q)
				require.NoError(t, err, p.Title)
				assert.Equal(t, want, run(ctx, t, conn, sql), "panel %q, SQL:\n%s", p.Title, sql)
			}
		})
	}
}

// TestExpand checks the expander itself against Grafana's documented
// expansions, and that it refuses what it does not cover.
func TestExpand(t *testing.T) {
	t.Parallel()
	q := grafanaQuery{
		from:     time.Date(2026, 3, 1, 6, 0, 0, 0, time.UTC),
		to:       time.Date(2026, 3, 3, 18, 0, 0, 0, time.UTC),
		interval: 2 * time.Hour,
		vars:     map[string][]string{"event_type": {"a", "it's"}},
	}
	tests := []struct {
		in, want, err string
	}{
		{in: "$__timeFilter(date)", want: "date BETWEEN '2026-03-01T06:00:00Z' AND '2026-03-03T18:00:00Z'"},
		{in: "$__timeFrom()::date, $__timeTo()", want: "'2026-03-01T06:00:00Z'::date, '2026-03-03T18:00:00Z'"},
		{in: "$__timeGroupAlias(hour, $__interval)", want: `floor(extract(epoch from hour)/7200)*7200 AS "time"`},
		{in: "$__timeGroupAlias(hour, '1d')", want: `floor(extract(epoch from hour)/86400)*86400 AS "time"`},
		{in: "event_type IN ($event_type)", want: "event_type IN ('a','it''s')"},
		{in: "$__timeGroup(hour, '1h')", err: "not covered"},
		{in: "$__unixEpochFrom()", err: "not covered"},
		{in: "user_id = $user", err: "unexpanded macro or variable: $user"},
		{in: "$__timeFilter()", err: "not covered"},
	}
	for _, tt := range tests {
		got, err := expand(tt.in, q)
		if tt.err != "" {
			require.ErrorContains(t, err, tt.err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
	}
}

// databaseWithKnownRows creates a fresh database, lets pg_flush create its
// tables and indexes there (it does at Start, create_schema being on by
// default), inserts the known rows and returns a connection whose session
// time zone is not UTC. The query protocol is the simple one, as Grafana's.
func databaseWithKnownRows(t *testing.T) *pgx.Conn {
	t.Helper()
	dsn := testservers.FreshDatabase(t)
	_, prefix := testservers.SharedRedis(t)
	ctx := t.Context()
	factory := pgflushextension.NewFactory()
	cfg := factory.CreateDefaultConfig().(*pgflushextension.Config)
	cfg.DSN = configopaque.String(dsn)
	cfg.Redis.Endpoint = testservers.RedisEndpoint()
	cfg.KeyPrefix = prefix
	ext, err := factory.Create(ctx, extensiontest.NewNopSettings(factory.Type()), cfg)
	require.NoError(t, err)
	require.NoError(t, ext.Start(ctx, componenttest.NewNopHost()))
	t.Cleanup(func() { assert.NoError(t, ext.Shutdown(context.WithoutCancel(ctx))) })

	connCfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	connCfg.RuntimeParams["timezone"] = "America/New_York"
	connCfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, connCfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.WithoutCancel(ctx)) })
	// Start connects at once when both servers answer, as here; should it
	// ever connect in the background, the tables follow shortly.
	require.Eventually(t, func() bool {
		var ok bool
		err := conn.QueryRow(ctx, "SELECT to_regclass('analytics_user_daily') IS NOT NULL").Scan(&ok)
		return err == nil && ok
	}, 30*time.Second, 50*time.Millisecond, "pg_flush did not create its tables")

	batch := &pgx.Batch{}
	for _, r := range dailyRows {
		batch.Queue("INSERT INTO analytics_daily (event_type, date, count, updated_at) VALUES ($1, $2::date, $3, now())",
			r.eventType, r.date, r.count)
	}
	for _, r := range hourlyRows {
		batch.Queue("INSERT INTO analytics_hourly (event_type, hour, count, updated_at) VALUES ($1, $2::timestamptz, $3, now())",
			r.eventType, r.hour, r.count)
	}
	for _, r := range userRows {
		batch.Queue("INSERT INTO analytics_user_daily (user_id, event_type, date, count, updated_at) VALUES ($1, $2, $3::date, $4, now())",
			r.user, r.eventType, r.date, r.count)
	}
	require.NoError(t, conn.SendBatch(ctx, batch).Close())
	return conn
}

// run executes sql and returns its rows as strings: times in UTC RFC 3339,
// numbers in decimal. A numeric column named "time" is epoch seconds, which
// Grafana reads as a time, so it is shown as one.
func run(ctx context.Context, t *testing.T, conn *pgx.Conn, sql string) [][]string {
	t.Helper()
	rows, err := conn.Query(ctx, sql)
	require.NoError(t, err, sql)
	defer rows.Close()
	fields := rows.FieldDescriptions()
	out := [][]string{}
	for rows.Next() {
		values, err := rows.Values()
		require.NoError(t, err)
		row := make([]string, len(values))
		for i, v := range values {
			row[i] = cell(t, fields[i].Name, v)
		}
		out = append(out, row)
	}
	require.NoError(t, rows.Err(), sql)
	return out
}

func cell(t *testing.T, column string, v any) string {
	t.Helper()
	var n int64
	switch v := v.(type) {
	case nil:
		return "NULL"
	case string:
		return v
	case time.Time:
		return v.UTC().Format(time.RFC3339)
	case int64:
		n = v
	case int32:
		n = int64(v)
	case pgtype.Numeric:
		i, err := v.Int64Value()
		require.NoError(t, err)
		require.True(t, i.Valid, "a fraction in column %q", column)
		n = i.Int64
	default:
		t.Fatalf("column %q: unexpected %T", column, v)
	}
	if column == "time" {
		return time.Unix(n, 0).UTC().Format(time.RFC3339)
	}
	return strconv.FormatInt(n, 10)
}
