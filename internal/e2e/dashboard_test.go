package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// The dashboard's browser test: the built distro with the analytics_query
// extension holds known counts, headless Chromium (Debian's chromium,
// installed by scripts/ensure-chromium.sh) opens the page it serves, and what
// the page shows (the totals, top users, DAU/WAU/MAU in the DOM, and the data
// each uPlot chart was given) must equal what the test sent.
//
// DASHBOARD_SCREENSHOT=path also writes the screenshot there (`make
// screenshot` regenerates docs/dashboard.png so).

// demoEvent is one counted event of the demo data.
type demoEvent struct {
	typ, user string // user "" is an anonymous event
	ts        time.Time
}

// demoData is a week of a small product's events, ending now (its first
// day empty, see newDemoData): five event
// types with a trend, a dozen users of uneven activity, anonymous page views.
type demoData struct {
	events   []demoEvent
	first    time.Time // the week's first day, midnight UTC
	from, to string    // the week, UTC days
}

var (
	demoTypes = []string{"page_view", "search", "add_to_cart", "purchase", "signup"}
	demoBase  = []int{120, 45, 22, 9, 4} // events per day of each type on the first day
	demoUsers = []string{
		"ada", "grace", "linus", "margaret", "ken", "barbara",
		"dennis", "radia", "edsger", "frances", "tim", "leslie",
	}
)

func newDemoData(now time.Time) *demoData {
	now = now.UTC()
	today := now.Truncate(24 * time.Hour)
	first := today.AddDate(0, 0, -6)
	d := &demoData{first: first, from: first.Format(time.DateOnly), to: today.Format(time.DateOnly)}
	// The week's first day stays empty: its hours are partly older than the
	// exporter's max_event_age (6 days), which would drop them.
	for day := 1; day < 7; day++ {
		start := today.AddDate(0, 0, day-6)
		span := 24 * time.Hour
		if day == 6 { // today: only the hours that have passed
			span = max(now.Sub(start)-time.Minute, time.Second)
		}
		for ti, typ := range demoTypes {
			n := demoBase[ti] * (10 + 2*day + (day*day+ti)%5) / 10 // grows over the week, with a wobble
			for j := range n {
				var user string
				switch {
				case typ == "page_view" && j%4 == 3:
					// anonymous
				case typ == "search" && j < len(demoUsers) && day < 6:
					user = demoUsers[(j+day)%len(demoUsers)] // everyone searches on the first days
				default:
					k := (j*j + 3*day + ti) % len(demoUsers) * (j%3 + 1) / 3 // a few users do most
					if day == 6 {
						k %= 9 // and not everyone came back today
					}
					user = demoUsers[k]
				}
				offset := time.Duration(int64(span) * int64((j*7919)%1000) / 1000)
				d.events = append(d.events, demoEvent{typ: typ, user: user, ts: start.Add(offset)})
			}
		}
	}
	return d
}

// logs are events [from, to) as OTLP log records, each with its own
// identity (uidPrefix and its index).
func (d *demoData) logs(uidPrefix string, from, to int) plog.Logs {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("service.name", "shop")
	recs := rl.ScopeLogs().AppendEmpty().LogRecords()
	for i := from; i < to; i++ {
		e := d.events[i]
		lr := recs.AppendEmpty()
		lr.SetEventName(e.typ)
		lr.SetTimestamp(pcommon.NewTimestampFromTime(e.ts))
		if e.user != "" {
			lr.Attributes().PutStr("user.id", e.user)
		}
		lr.Attributes().PutStr("log.record.uid", uidPrefix+strconv.Itoa(i))
	}
	return ld
}

// send posts events [from, len) in requests of at most 500.
func (d *demoData) send(ctx context.Context, t *testing.T, dist *distro, from int) {
	t.Helper()
	for i := from; i < len(d.events); i += 500 {
		body, err := plogotlp.NewExportRequestFromLogs(d.logs("demo-", i, min(i+500, len(d.events)))).MarshalProto()
		require.NoError(t, err)
		dist.post(ctx, "/v1/logs", body)
	}
}

// dashboardWant is what the page must show for the week at one granularity.
type dashboardWant struct {
	totals     map[string]int64            // event type -> events
	visitors   map[string]int64            // event type -> distinct users
	total      int64                       // all events
	allUsers   int64                       // distinct users
	userEvents map[string]int64            // user -> events
	series     map[string]map[string]int64 // event type -> bucket label -> events
	dau        int64                       // distinct users today
	buckets    []string                    // the x axis (not for hours: it ends at the current hour)
}

// bucketLabel is the API's time value of the bucket holding ts: an ISO date
// (of the Monday for weeks, of the 1st for months), an RFC 3339 hour.
func bucketLabel(ts time.Time, granularity string) string {
	ts = ts.UTC()
	day := ts.Truncate(24 * time.Hour)
	switch granularity {
	case "hour":
		return ts.Truncate(time.Hour).Format(time.RFC3339)
	case "week":
		return day.AddDate(0, 0, -(int(day.Weekday())+6)%7).Format(time.DateOnly)
	case "month":
		return time.Date(day.Year(), day.Month(), 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
	default:
		return day.Format(time.DateOnly)
	}
}

func (d *demoData) want(granularity string) dashboardWant {
	w := dashboardWant{
		totals: map[string]int64{}, visitors: map[string]int64{}, userEvents: map[string]int64{},
		series: map[string]map[string]int64{},
	}
	typeUsers := map[string]map[string]bool{}
	all, today := map[string]bool{}, map[string]bool{}
	for _, e := range d.events {
		w.totals[e.typ]++
		w.total++
		if w.series[e.typ] == nil {
			w.series[e.typ] = map[string]int64{}
		}
		w.series[e.typ][bucketLabel(e.ts, granularity)]++
		if e.user == "" {
			continue
		}
		if typeUsers[e.typ] == nil {
			typeUsers[e.typ] = map[string]bool{}
		}
		typeUsers[e.typ][e.user] = true
		all[e.user] = true
		w.userEvents[e.user]++
		if e.ts.Format(time.DateOnly) == d.to {
			today[e.user] = true
		}
	}
	for typ, us := range typeUsers {
		w.visitors[typ] = int64(len(us))
	}
	if granularity != "hour" { // every bucket of the week's days, empty or not
		labels := map[string]bool{}
		for day := range 7 {
			labels[bucketLabel(d.first.AddDate(0, 0, day), granularity)] = true
		}
		w.buckets = slices.Sorted(maps.Keys(labels))
	}
	w.allUsers, w.dau = int64(len(all)), int64(len(today))
	return w
}

// pageView is what the page shows, read from its DOM and from
// window.dashboardState (series: the data the charts were given).
type pageView struct {
	Totals        map[string]int64  `json:"totals"`
	TotalTexts    map[string]string `json:"totalTexts"`
	Visitors      map[string]int64  `json:"visitors"`
	TotalEvents   int64             `json:"totalEvents"`
	TotalText     string            `json:"totalText"`
	TotalVisitors int64             `json:"totalVisitors"`
	DAU           int64             `json:"dau"`
	WAU           int64             `json:"wau"`
	MAU           int64             `json:"mau"`
	TopUsers      []struct {
		User   string `json:"user"`
		Events int64  `json:"events"`
	} `json:"topUsers"`
	Charts       []string `json:"charts"`
	Canvases     int      `json:"canvases"`
	ErrorShown   bool     `json:"errorShown"`
	ErrorText    string   `json:"errorText"`
	Refreshes    int      `json:"refreshes"`
	DateRange    []string `json:"dateRange"`
	Granularity  string   `json:"granularity"`
	SeriesLabels []string `json:"seriesLabels"`
	Series       map[string][]int64
}

const readPageJS = `(() => {
  const q = (s, el) => (el || document).querySelector(s);
  const qa = (s) => Array.from(document.querySelectorAll(s));
  const num = (el) => Number(el.dataset.value);
  const st = window.dashboardState;
  const rows = qa('[data-testid="total-row"]');
  return JSON.stringify({
    totals: Object.fromEntries(rows.map((r) => [r.dataset.event, num(q('[data-testid="total-value"]', r))])),
    totalTexts: Object.fromEntries(rows.map((r) => [r.dataset.event, q('[data-testid="total-value"]', r).textContent])),
    visitors: Object.fromEntries(rows.map((r) => [r.dataset.event, num(q('[data-testid="total-visitors-value"]', r))])),
    totalEvents: num(q('[data-testid="total-events"]')),
    totalText: q('[data-testid="total-events"]').textContent,
    totalVisitors: num(q('[data-testid="total-visitors"]')),
    dau: num(q('[data-testid="dau"]')), wau: num(q('[data-testid="wau"]')), mau: num(q('[data-testid="mau"]')),
    topUsers: qa('[data-testid="top-user-row"]').map((r) => ({ user: r.dataset.user, events: num(q('td', r)) })),
    charts: qa('[data-testid="chart"]').map((f) => f.dataset.event),
    canvases: qa('[data-testid="chart"] canvas').length,
    errorShown: !q('[data-testid="error"]').hidden,
    errorText: q('[data-testid="error"]').textContent,
    refreshes: st.refreshes,
    dateRange: st.dateRange,
    granularity: st.series ? st.series.granularity : "",
    seriesLabels: st.series ? st.series.labels : [],
    series: st.series ? st.series.events : {},
  });
})()`

// chromiumPath is $CHROMIUM_BIN or /usr/bin/chromium. A missing browser
// skips the test, except under CI=true where it fails it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CHROMIUM_BIN")
	if bin == "" {
		bin = "/usr/bin/chromium"
	}
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("chromium not found at %s (run scripts/ensure-chromium.sh; make test does): %v", bin, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// browserTab starts a headless Chromium with a fresh profile in the test's
// temp dir and returns a tab; the browser is stopped at cleanup. Uncaught
// page exceptions are collected in exceptions.
func browserTab(t *testing.T, exceptions *syncBuffer) context.Context {
	t.Helper()
	profile := filepath.Join(t.TempDir(), "chromium-profile")
	output := &syncBuffer{}
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(),
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(output),
	)
	tab, cancelTab := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			desc := e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				desc += " " + e.ExceptionDetails.Exception.Description
			}
			_, _ = fmt.Fprintln(exceptions, desc)
		}
	}))
	// Cleanups run last-in first-out: the browser stops before its
	// profile dir is removed.
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		if t.Failed() {
			t.Logf("chromium output:\n%s", output.String())
		}
	})
	return tab
}

// readPage returns what the page shows now.
func readPage(ctx context.Context, t *testing.T) pageView {
	t.Helper()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](readPageJS))
	require.NoError(t, err)
	var v pageView
	require.NoError(t, json.Unmarshal([]byte(raw), &v))
	return v
}

// waitPage polls the page until cond holds, for at most 30 s (the page
// refreshes every second).
func waitPage(ctx context.Context, t *testing.T, msg string, cond func(pageView) bool) pageView {
	t.Helper()
	var v pageView
	waitFor(t, 30*time.Second, 100*time.Millisecond, msg, func() bool {
		v = readPage(ctx, t)
		return cond(v)
	})
	return v
}

// assertPage checks everything the page shows for the week against want.
func assertPage(t *testing.T, want dashboardWant, v pageView, granularity string) {
	t.Helper()
	assert.False(t, v.ErrorShown, "error shown: %s", v.ErrorText)
	assert.Equal(t, want.totals, v.Totals, "totals per event type")
	assert.Equal(t, want.visitors, v.Visitors, "visitors per event type")
	assert.Equal(t, want.total, v.TotalEvents, "all events")
	assert.Equal(t, want.allUsers, v.TotalVisitors, "all visitors")
	for typ, n := range want.totals { // what is visible, not only the data attributes
		assert.Equal(t, strconv.FormatInt(n, 10), strings.ReplaceAll(v.TotalTexts[typ], ",", ""), "shown total of %s", typ)
	}
	assert.Equal(t, strconv.FormatInt(want.total, 10), strings.ReplaceAll(v.TotalText, ",", ""))

	// Top users: the ten with the most events, in order (ties in any order).
	counts := slices.SortedFunc(maps.Values(want.userEvents), func(a, b int64) int { return int(b - a) })
	require.Len(t, v.TopUsers, min(10, len(counts)), "top users")
	for i, u := range v.TopUsers {
		assert.Equal(t, want.userEvents[u.User], u.Events, "events of top user %q", u.User)
		assert.Equal(t, counts[i], u.Events, "top user #%d", i+1)
	}

	// One chart per event type, each drawn (uPlot's canvas) with exactly
	// the counts of its buckets: every bucket of the week, zero where no
	// event was counted.
	assert.ElementsMatch(t, slices.Collect(maps.Keys(want.totals)), v.Charts, "one chart per event type")
	assert.GreaterOrEqual(t, v.Canvases, len(v.Charts), "every chart drawn")
	assert.Equal(t, granularity, v.Granularity)
	if granularity == "hour" { // the hours of the week up to now (the hour may just have turned)
		assert.InDelta(t, 6*24+time.Now().UTC().Hour()+1, len(v.SeriesLabels), 1, "buckets on the x axis")
	} else {
		assert.Equal(t, want.buckets, v.SeriesLabels, "buckets on the x axis")
	}
	for typ, series := range want.series {
		got := v.Series[typ]
		require.Len(t, got, len(v.SeriesLabels), "chart data of %s", typ)
		shown := map[string]int64{}
		for i, label := range v.SeriesLabels {
			if got[i] != 0 {
				shown[label] = got[i]
			}
		}
		assert.Equal(t, series, shown, "chart data of %s", typ)
	}
}

// httpGet returns the status and body of a GET.
func httpGet(ctx context.Context, target string) (status int, body []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, http.NoBody)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// TestDashboardInBrowser is the browser test of the built-in dashboard.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	components, err := exec.CommandContext(ctx, distroBinary(t), "components").CombinedOutput()
	require.NoError(t, err, "%s components: %s", distroBinary(t), components)
	require.True(t, strings.Contains(string(components), "- name: analytics_query"), //nolint:testifylint // the whole list is noise
		"the distro has no analytics_query extension: builder-config.yaml must list analyticsqueryextension")
	_, prefix := testservers.SharedRedis(t)
	dsn := testservers.FreshDatabase(t)
	queryPort := testservers.FreePort(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		// Flushes run while the page reads: its numbers come from both
		// stores, and must be exact whichever holds them.
		FlushInterval: 300 * time.Millisecond,
		// The sample config's analytics_query, on a port of its own.
		Env: []string{"QUERY_ENDPOINT=127.0.0.1:" + strconv.Itoa(queryPort)},
	})
	base := fmt.Sprintf("http://127.0.0.1:%d/", queryPort)
	waitFor(t, 30*time.Second, 50*time.Millisecond, "analytics_query /healthz", func() bool {
		status, _, getErr := httpGet(ctx, base+"healthz")
		return getErr == nil && status == http.StatusOK
	})
	status, index, err := httpGet(ctx, base)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status, "GET / must serve the dashboard (dashboard.Handler() mounted at /): %s", index)
	require.Contains(t, string(index), "assets/dashboard.js")

	// The demo week ends today (UTC); DAU is today's. Close to midnight,
	// wait for the new day rather than straddle two (at most two minutes).
	if untilMidnight := time.Until(time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)); untilMidnight < 2*time.Minute {
		select {
		case <-time.After(untilMidnight + time.Second):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	demo := newDemoData(time.Now())
	demo.send(ctx, t, d, 0)
	want := demo.want("day")

	exceptions := &syncBuffer{}
	tab := browserTab(t, exceptions)
	page := base + "?" + url.Values{
		"range": {"7d"}, "granularity": {"day"}, "refresh": {"1"},
	}.Encode()
	require.NoError(t, chromedp.Do(tab, chromedp.Navigate(page)))

	// 1. The last 7 days per day: every number on the page, exactly.
	v := waitPage(tab, t, "page shows the demo totals", func(v pageView) bool {
		return v.Refreshes > 0 && v.TotalEvents == want.total && len(v.Charts) == len(want.totals)
	})
	assert.Equal(t, []string{demo.from, demo.to}, v.DateRange, "the days of the 7d preset")
	assertPage(t, want, v, "day")
	assert.Equal(t, want.dau, v.DAU, "DAU: distinct users today")
	// Every user is active on the week's first days: the last 7 and 30
	// days hold them all, whether or not a preset counts today.
	assert.Equal(t, int64(len(demoUsers)), v.WAU, "WAU")
	assert.Equal(t, int64(len(demoUsers)), v.MAU, "MAU")

	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	require.NoError(t, os.WriteFile(shot, png, 0o600))
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if out := os.Getenv("DASHBOARD_SCREENSHOT"); out != "" {
		require.NoError(t, os.WriteFile(out, png, 0o644))
		t.Logf("screenshot also written to %s", out)
	}

	// 2. Real time: new events show without a reload.
	sent := len(demo.events)
	for i := range 5 {
		demo.events = append(demo.events, demoEvent{typ: "purchase", user: "newcomer", ts: time.Now().UTC().Add(-time.Duration(i) * time.Second)})
	}
	demo.send(ctx, t, d, sent)
	want = demo.want("day")
	refreshes := v.Refreshes
	v = waitPage(tab, t, "page refreshes itself with the new events", func(v pageView) bool {
		return v.Refreshes > refreshes && v.TotalEvents == want.total
	})
	assertPage(t, want, v, "day")
	assert.Equal(t, want.dau, v.DAU, "DAU with the newcomer")

	// 3. The other granularities, chosen on the page as a user would.
	for _, granularity := range []string{"hour", "week", "month"} {
		require.NoError(t, chromedp.Do(tab, chromedp.Evaluate[chromedp.Void](`(() => {
			const g = document.getElementById("granularity");
			g.value = "`+granularity+`";
			g.dispatchEvent(new Event("change", { bubbles: true }));
		})()`)))
		w := demo.want(granularity)
		v = waitPage(tab, t, "page shows charts per "+granularity, func(v pageView) bool {
			return v.Granularity == granularity && v.TotalEvents == w.total
		})
		assertPage(t, w, v, granularity)
	}
	assert.Empty(t, exceptions.String(), "uncaught exceptions in the page")

	// 4. The API goes away: the page says so and keeps the last numbers.
	d.kill()
	v = waitPage(tab, t, "page shows the API error", func(v pageView) bool { return v.ErrorShown })
	assert.Contains(t, v.ErrorText, "cannot reach the query API")
	assert.Equal(t, want.total, v.TotalEvents, "last numbers kept")
}
