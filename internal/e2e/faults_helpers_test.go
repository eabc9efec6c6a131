package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// The fault tests identify every OTLP request by a probe: one extra record
// (or span) whose event type "probe:<id>" no other request uses. After the
// final flush, the daily row of that type says how many times the request
// was applied, and the tables must equal the sum of each request's
// expectation times that multiplicity, exactly.

// probeDay is the UTC day of base, where every probe is counted.
var probeDay = base.Format(time.DateOnly)

// request is one OTLP/HTTP request with what it counts when applied once.
type request struct {
	id   int
	path string
	body []byte
	exp  *expected

	// Updated by loadClient under its mutex.
	attempts       int // attempts sent
	failures       int // attempts that did not get a 200
	acked          bool
	inFlightAtKill int // kills during which an attempt of it was in flight
}

func probeType(id int) string { return "probe:" + strconv.Itoa(id) }

// mixedRequest builds request id: logs (even ids) or spans (odd ids) from the
// shared dataset, plus the probe. Requests stay far below the exporter
// queue's batch sizes, so exporterhelper never splits one across two Redis
// batches (a request is applied all or nothing).
func mixedRequest(id, logs, spans int) (*request, error) {
	r := &request{id: id, exp: newExpected()}
	var err error
	if id%2 == 0 {
		ld := logsBatch(logs, id, r.exp)
		lr := ld.ResourceLogs().At(1).ScopeLogs().At(0).LogRecords().AppendEmpty()
		lr.SetEventName(probeType(id))
		lr.SetTimestamp(pcommon.NewTimestampFromTime(base))
		lr.Attributes().PutStr("log.record.uid", probeType(id))
		r.path = "/v1/logs"
		r.body, err = plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
	} else {
		td := tracesBatch(spans, id, r.exp)
		sp := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().AppendEmpty()
		sp.SetName(probeType(id))
		tid, sid := spanIDs(id, spans)
		sp.SetTraceID(tid)
		sp.SetSpanID(sid)
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(base))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(base.Add(time.Millisecond)))
		r.path = "/v1/traces"
		r.body, err = ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	}
	if err != nil {
		return nil, err
	}
	r.exp.add(probeType(id), "", base)
	return r, nil
}

// addTimes adds o's rows, times n, to e.
func (e *expected) addTimes(o *expected, n int64) {
	src := o.tables()
	for i, dst := range e.tables() {
		for k, v := range src[i].rows {
			dst.rows[k] += v * n
		}
	}
	e.events += o.events * n
}

// multiplicities reads how many times each request was applied from its
// probe row and returns the expectation those multiplicities imply.
func multiplicities(got *expected, reqs []*request) (mult map[int]int64, want *expected) {
	mult = make(map[int]int64, len(reqs))
	want = newExpected()
	for _, r := range reqs {
		m := got.daily[probeType(r.id)+"|"+probeDay]
		mult[r.id] = m
		want.addTimes(r.exp, m)
	}
	return mult, want
}

// tablePair is one table's expected and actual rows.
type tablePair struct {
	table     string
	want, got map[string]int64
}

// pairTables pairs want's and got's tables.
func pairTables(want, got *expected) []tablePair {
	g := got.tables()
	pairs := make([]tablePair, 0, len(g))
	for i, w := range want.tables() {
		pairs = append(pairs, tablePair{table: w.name, want: w.rows, got: g[i].rows})
	}
	return pairs
}

// assertTables compares the tables with want, key by key, and reports the
// first differing rows of each (the tables can hold 20 000 rows).
func assertTables(t testing.TB, want, got *expected) {
	t.Helper()
	for _, p := range pairTables(want, got) {
		var diff []string
		for _, k := range slices.Sorted(maps.Keys(p.want)) {
			if g, ok := p.got[k]; !ok || g != p.want[k] {
				diff = append(diff, fmt.Sprintf("%q: want %d, got %d (present %v)", k, p.want[k], g, ok))
			}
		}
		for _, k := range slices.Sorted(maps.Keys(p.got)) {
			if _, ok := p.want[k]; !ok {
				diff = append(diff, fmt.Sprintf("%q: unexpected row, count %d", k, p.got[k]))
			}
		}
		if len(diff) > 20 {
			diff = append(diff[:20], fmt.Sprintf("… %d more", len(diff)-20))
		}
		assert.Empty(t, diff, "%s: %d rows expected, %d rows, sum %d expected, sum %d",
			p.table, len(p.want), len(p.got), sum(p.want), sum(p.got))
	}
}

// sameTables reports whether got equals want on every table.
func sameTables(want, got *expected) bool {
	for _, p := range pairTables(want, got) {
		if !maps.Equal(p.want, p.got) {
			return false
		}
	}
	return true
}

// overcounted returns a row of got that is larger than in want, if any: a
// count (or a sum of non-negative values, as the dataset's) that can only
// grow must never pass its final value.
func overcounted(want, got *expected) string {
	for _, p := range pairTables(want, got) {
		for k, v := range p.got {
			if v > p.want[k] {
				return fmt.Sprintf("%s %q = %d > %d", p.table, k, v, p.want[k])
			}
		}
	}
	return ""
}

// waitFor polls cond in the test goroutine every interval until it holds,
// failing the test with msg after timeout.
func waitFor(t testing.TB, timeout, interval time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, msg)
		}
		time.Sleep(interval)
	}
}

// assertRedisDrained checks that nothing is left under prefix but batch
// markers: no pending or staging entry, no counter, no quarantine.
func assertRedisDrained(ctx context.Context, t testing.TB, rdb *redis.Client, prefix string) {
	t.Helper()
	assert.Zero(t, rdb.ZCard(ctx, prefix+":pending").Val(), "pending set drained")
	assert.Zero(t, rdb.ZCard(ctx, prefix+":staging").Val(), "no staging entry left")
	assert.Zero(t, rdb.Exists(ctx, prefix+":quarantine").Val(), "nothing quarantined")
	for _, pattern := range []string{":counter:*", ":user:*", ":staging:*"} {
		keys, err := rdb.Keys(ctx, prefix+pattern).Result()
		require.NoError(t, err)
		assert.Empty(t, keys, "keys %s%s left", prefix, pattern)
	}
}

// configWithFlush writes a copy of testdata/config.yaml whose pg_flush block
// gets the extra settings (YAML lines at the block's indentation) and
// returns its path.
func configWithFlush(t testing.TB, extra ...string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "testdata", "config.yaml"))
	require.NoError(t, err)
	const anchor = "    interval: ${env:FLUSH_INTERVAL:-10s}\n"
	require.Contains(t, string(src), anchor, "testdata/config.yaml changed: update configWithFlush")
	var add strings.Builder
	for _, line := range extra {
		add.WriteString("    " + line + "\n")
	}
	cfg := strings.Replace(string(src), anchor, anchor+add.String(), 1)
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

// metricValue returns the value of the series name{labels…} in a Prometheus
// text exposition (labels as `key="value"`, all required); 0 when absent.
func metricValue(text, name string, labels ...string) float64 {
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		series, value := line[:sp], line[sp+1:]
		if series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(series, l) {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0
		}
		return v
	}
	return 0
}

// histogram summarizes a Prometheus histogram of one series.
type histogram struct {
	count, sum float64
	// maxBound is the smallest bucket bound that holds every observation
	// (+Inf when the largest one is beyond the last finite bound).
	maxBound float64
}

func (h histogram) mean() float64 {
	if h.count == 0 {
		return 0
	}
	return h.sum / h.count
}

func (h histogram) String() string {
	return fmt.Sprintf("%.0f ticks, mean %.1f ms, all ≤ %g s", h.count, 1000*h.mean(), h.maxBound)
}

func parseHistogram(text, name string) histogram {
	h := histogram{count: metricValue(text, name+"_count"), sum: metricValue(text, name+"_sum")}
	type bucket struct{ le, cum float64 }
	var buckets []bucket
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), name+`_bucket{le="`)
		if !ok {
			continue
		}
		le, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		bound, err1 := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
		cum, err2 := strconv.ParseFloat(value, 64)
		if err1 == nil && err2 == nil {
			buckets = append(buckets, bucket{bound, cum})
		}
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	for _, b := range buckets {
		if b.cum >= h.count {
			h.maxBound = b.le
			break
		}
	}
	return h
}

// loadClient sends requests from a fixed number of workers, each request
// resent until it is acknowledged (a 200), like an OTLP client with retries,
// with a bounded number of attempts. The targets can be paused (a kill is
// coming) and replaced; pause returns the requests that were in flight.
type loadClient struct {
	t              testing.TB
	build          func(id int) (*request, error)
	maxRequests    int
	maxAttempts    int
	attemptTimeout time.Duration

	mu       sync.Mutex
	cond     *sync.Cond
	targets  []*distro
	stopped  bool // no new request is started
	nextID   int
	reqs     []*request
	inFlight map[int]*request
	acked    int
	failed   int // attempts that did not get a 200
	errs     []string
	wg       sync.WaitGroup
}

func newLoadClient(t testing.TB, maxRequests, maxAttempts int, attemptTimeout time.Duration, build func(id int) (*request, error)) *loadClient {
	c := &loadClient{
		t: t, build: build, maxRequests: maxRequests, maxAttempts: maxAttempts,
		attemptTimeout: attemptTimeout, inFlight: map[int]*request{},
	}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// start runs workers goroutines sending to targets (round robin by request
// id and attempt).
func (c *loadClient) start(ctx context.Context, workers int, targets ...*distro) {
	c.resume(targets...)
	for range workers {
		c.wg.Go(func() { c.worker(ctx) })
	}
}

func (c *loadClient) worker(ctx context.Context) {
	for {
		r := c.newRequest()
		if r == nil {
			return
		}
		backoff := 50 * time.Millisecond
		for {
			d := c.acquire(r)
			if d == nil {
				return
			}
			actx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
			err := d.send(actx, r.path, r.body)
			cancel()
			if c.release(r, err) {
				break
			}
			if ctx.Err() != nil {
				return
			}
			time.Sleep(backoff) // client retry backoff
			backoff = min(2*backoff, time.Second)
		}
	}
}

// newRequest builds the next request, or returns nil when the client stops.
func (c *loadClient) newRequest() *request {
	c.mu.Lock()
	if c.stopped || c.nextID >= c.maxRequests || len(c.errs) > 0 {
		c.mu.Unlock()
		return nil
	}
	id := c.nextID
	c.nextID++
	c.mu.Unlock()
	r, err := c.build(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errs = append(c.errs, fmt.Sprintf("build request %d: %v", id, err))
		c.cond.Broadcast()
		return nil
	}
	c.reqs = append(c.reqs, r)
	return r
}

// acquire waits for a target and registers r's attempt as in flight; nil
// when the client gave up.
func (c *loadClient) acquire(r *request) *distro {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.targets) == 0 && len(c.errs) == 0 {
		c.cond.Wait()
	}
	if len(c.errs) > 0 {
		return nil
	}
	d := c.targets[(r.id+r.attempts)%len(c.targets)]
	r.attempts++
	c.inFlight[r.id] = r
	return d
}

// release records the outcome of r's attempt; true when r is acknowledged.
func (c *loadClient) release(r *request, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inFlight, r.id)
	if err == nil {
		r.acked = true
		c.acked++
		return true
	}
	r.failures++
	c.failed++
	if r.failures >= c.maxAttempts {
		c.errs = append(c.errs, fmt.Sprintf("request %d not acknowledged after %d attempts: %v", r.id, r.failures, err))
		c.cond.Broadcast()
		return true
	}
	return false
}

// pause stops handing out targets and returns the requests whose attempt is
// in flight now: any attempt started later waits for resume.
func (c *loadClient) pause() []*request {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.targets = nil
	inFlight := slices.Collect(maps.Values(c.inFlight))
	for _, r := range inFlight {
		r.inFlightAtKill++
	}
	return inFlight
}

func (c *loadClient) resume(targets ...*distro) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.targets = targets
	c.cond.Broadcast()
}

func (c *loadClient) failedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

func (c *loadClient) ackedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked
}

// finish stops new requests, waits until every started one is acknowledged
// (or given up), and requires that all were acknowledged.
func (c *loadClient) finish() []*request {
	c.t.Helper()
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Empty(c.t, c.errs, "requests not acknowledged")
	for _, r := range c.reqs {
		require.True(c.t, r.acked, "request %d not acknowledged", r.id)
	}
	sort.Slice(c.reqs, func(i, j int) bool { return c.reqs[i].id < c.reqs[j].id })
	return c.reqs
}
