package redisanalyticsexporter

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

var (
	// tsRecord is the timestamp the tests give records: 2025-06-01 09:15 UTC.
	tsRecord = time.Date(2025, 6, 1, 9, 15, 0, 0, time.UTC)
	// tsObserved is a different hour and day, to tell the clocks apart.
	tsObserved = time.Date(2025, 6, 2, 11, 0, 0, 0, time.UTC)
	// tsNow is the injected clock.
	tsNow = time.Date(2025, 6, 3, 23, 59, 0, 0, time.UTC)
)

// counters runs the aggregation of one push (no I/O) and returns the counter
// keys with their increments, and the drops per reason.
func counters(t testing.TB, cfg *Config, fill func(*aggregator, *mapper, int64), now time.Time) (map[string]int64, map[string]int64) {
	t.Helper()
	schema, err := protocol.New(cfg.KeyPrefix)
	require.NoError(t, err)
	m := newMapper(cfg)
	a := newAggregator(testSchema)
	fill(a, &m, now.UnixNano())
	a.finalize(&m)
	a.encode([]string{"b1"}, protocol.ApplyTTLs{Counter: 60 * time.Second, BatchMarker: 60 * time.Second, ResourceMarker: 600 * time.Second},
		cfg.CardinalityLimits, nil)
	got := increments(t, a.layout(t))
	var sum int64
	for key, n := range got {
		c, err := schema.Parse(key)
		require.NoError(t, err)
		if c.Family == protocol.Daily {
			sum += n
		}
	}
	assert.Equal(t, a.counted, sum, "counted events = sum of the daily counters")
	dropped := make(map[string]int64)
	for r, n := range a.dropped {
		if n > 0 {
			dropped[dropReason(r).String()] = n
		}
	}
	return got, dropped
}

func logsFill(ld plog.Logs) func(*aggregator, *mapper, int64) {
	return func(a *aggregator, m *mapper, now int64) { a.addLogs(ld, m, now) }
}

func tracesFill(td ptrace.Traces) func(*aggregator, *mapper, int64) {
	return func(a *aggregator, m *mapper, now int64) { a.addTraces(td, m, now) }
}

// eventKeys returns the keys one counted event at `at` produces.
func eventKeys(typ, user string, at time.Time) map[string]int64 {
	return counterKeys(protocol.DefaultPrefix, typ, user, at, 1)
}

// counterKeys returns the keys of n events of one type and user at `at`,
// under prefix.
func counterKeys(prefix, typ, user string, at time.Time, n int64) map[string]int64 {
	s, err := protocol.New(prefix)
	if err != nil {
		panic(err)
	}
	hour := protocol.HourOf(at)
	day := hour - hour%24
	keys := map[string]int64{
		s.Key(protocol.Counter{Family: protocol.Daily, EventType: typ, Hour: day}):   n,
		s.Key(protocol.Counter{Family: protocol.Hourly, EventType: typ, Hour: hour}): n,
	}
	if user != "" {
		keys[s.Key(protocol.Counter{Family: protocol.UserDaily, EventType: typ, UserID: user, Hour: day})] = n
	}
	return keys
}

func TestMapLogRecord(t *testing.T) {
	t.Parallel()
	ts := pcommon.NewTimestampFromTime
	long := strings.Repeat("a", 513)
	tests := []struct {
		name string
		cfg  func(*Config)
		// setup fills one log record and its resource; the record has
		// Timestamp tsRecord unless setup changes it.
		setup       func(lr plog.LogRecord, res pcommon.Resource)
		wantKeys    map[string]int64
		wantDropped map[string]int64
	}{
		{
			name:     "event name",
			setup:    func(lr plog.LogRecord, _ pcommon.Resource) { lr.SetEventName("signup") },
			wantKeys: eventKeys("signup", "", tsRecord),
		},
		{
			name: "event name wins over attribute",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("signup")
				lr.Attributes().PutStr("event.name", "click")
			},
			wantKeys: eventKeys("signup", "", tsRecord),
		},
		{
			name:     "attribute when event name is empty",
			setup:    func(lr plog.LogRecord, _ pcommon.Resource) { lr.Attributes().PutStr("event.name", "click") },
			wantKeys: eventKeys("click", "", tsRecord),
		},
		{
			name: "attribute fallback order skips empty and non-string values",
			cfg:  func(c *Config) { c.EventNameAttributes = []string{"a", "b", "c", "d"} },
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.Attributes().PutStr("a", "")
				lr.Attributes().PutInt("b", 5)
				lr.Attributes().PutStr("c", "third")
				lr.Attributes().PutStr("d", "fourth")
			},
			wantKeys: eventKeys("third", "", tsRecord),
		},
		{
			name:        "missing event type",
			setup:       func(lr plog.LogRecord, _ pcommon.Resource) { lr.Attributes().PutStr("user.id", "u1") },
			wantKeys:    map[string]int64{},
			wantDropped: map[string]int64{"missing_event_type": 1},
		},
		{
			name:        "event type only on the resource does not count",
			setup:       func(_ plog.LogRecord, res pcommon.Resource) { res.Attributes().PutStr("event.name", "x") },
			wantKeys:    map[string]int64{},
			wantDropped: map[string]int64{"missing_event_type": 1},
		},
		{
			name: "user on the resource",
			setup: func(lr plog.LogRecord, res pcommon.Resource) {
				lr.SetEventName("signup")
				res.Attributes().PutStr("user.id", "res-user")
			},
			wantKeys: eventKeys("signup", "res-user", tsRecord),
		},
		{
			name: "record user wins over resource user",
			setup: func(lr plog.LogRecord, res pcommon.Resource) {
				lr.SetEventName("signup")
				lr.Attributes().PutStr("enduser.id", "rec-user")
				res.Attributes().PutStr("user.id", "res-user")
			},
			wantKeys: eventKeys("signup", "rec-user", tsRecord),
		},
		{
			name: "user attribute order",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("signup")
				lr.Attributes().PutStr("enduser.id", "second")
				lr.Attributes().PutStr("user.id", "first")
			},
			wantKeys: eventKeys("signup", "first", tsRecord),
		},
		{
			name: "int user id",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("signup")
				lr.Attributes().PutInt("user.id", 1234567890123)
			},
			wantKeys: eventKeys("signup", "1234567890123", tsRecord),
		},
		{
			name: "negative int user id",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("signup")
				lr.Attributes().PutInt("user.id", -7)
			},
			wantKeys: eventKeys("signup", "-7", tsRecord),
		},
		{
			name: "other user value types are absent",
			setup: func(lr plog.LogRecord, res pcommon.Resource) {
				lr.SetEventName("signup")
				lr.Attributes().PutBool("user.id", true)
				lr.Attributes().PutDouble("enduser.id", 1.5)
				res.Attributes().PutEmptyMap("user.id").PutStr("x", "y")
				res.Attributes().PutStr("enduser.id", "res-user")
			},
			wantKeys: eventKeys("signup", "res-user", tsRecord),
		},
		{
			name: "empty user string is absent",
			setup: func(lr plog.LogRecord, res pcommon.Resource) {
				lr.SetEventName("signup")
				lr.Attributes().PutStr("user.id", "")
				res.Attributes().PutStr("user.id", "res-user")
			},
			wantKeys: eventKeys("signup", "res-user", tsRecord),
		},
		{
			name:     "no user",
			setup:    func(lr plog.LogRecord, _ pcommon.Resource) { lr.SetEventName("signup") },
			wantKeys: eventKeys("signup", "", tsRecord),
		},
		{
			name: "no user attributes configured",
			cfg:  func(c *Config) { c.UserIDAttributes = nil },
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("signup")
				lr.Attributes().PutStr("user.id", "u1")
			},
			wantKeys: eventKeys("signup", "", tsRecord),
		},
		{
			name: "observed timestamp when timestamp is zero",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("signup")
				lr.SetTimestamp(0)
				lr.SetObservedTimestamp(ts(tsObserved))
			},
			wantKeys: eventKeys("signup", "", tsObserved),
		},
		{
			name: "timestamp wins over observed timestamp",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("signup")
				lr.SetObservedTimestamp(ts(tsObserved))
			},
			wantKeys: eventKeys("signup", "", tsRecord),
		},
		{
			name: "now when both timestamps are zero",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("signup")
				lr.SetTimestamp(0)
			},
			wantKeys: eventKeys("signup", "", tsNow),
		},
		{
			name: "timestamp beyond int64 nanoseconds falls back",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("signup")
				lr.SetTimestamp(pcommon.Timestamp(math.MaxUint64))
				lr.SetObservedTimestamp(ts(tsObserved))
			},
			wantKeys: eventKeys("signup", "", tsObserved),
		},
		{
			name: "allowlist admits",
			cfg:  func(c *Config) { c.EventTypes = []string{"signup", "page_view"} },
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("page_view")
			},
			wantKeys: eventKeys("page_view", "", tsRecord),
		},
		{
			name:        "allowlist drops",
			cfg:         func(c *Config) { c.EventTypes = []string{"signup"} },
			setup:       func(lr plog.LogRecord, _ pcommon.Resource) { lr.SetEventName("page_view") },
			wantKeys:    map[string]int64{},
			wantDropped: map[string]int64{"not_allowed": 1},
		},
		{
			name:        "invalid UTF-8 type",
			setup:       func(lr plog.LogRecord, _ pcommon.Resource) { lr.SetEventName("bad\xff") },
			wantKeys:    map[string]int64{},
			wantDropped: map[string]int64{"invalid_value": 1},
		},
		{
			name:        "NUL byte in type",
			setup:       func(lr plog.LogRecord, _ pcommon.Resource) { lr.SetEventName("a\x00b") },
			wantKeys:    map[string]int64{},
			wantDropped: map[string]int64{"invalid_value": 1},
		},
		{
			name:        "type longer than 512 bytes",
			setup:       func(lr plog.LogRecord, _ pcommon.Resource) { lr.SetEventName(long) },
			wantKeys:    map[string]int64{},
			wantDropped: map[string]int64{"invalid_value": 1},
		},
		{
			name:     "type of exactly 512 bytes",
			setup:    func(lr plog.LogRecord, _ pcommon.Resource) { lr.SetEventName(long[:512]) },
			wantKeys: eventKeys(long[:512], "", tsRecord),
		},
		{
			name: "invalid user drops the event",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("signup")
				lr.Attributes().PutStr("user.id", "u\x00")
			},
			wantKeys:    map[string]int64{},
			wantDropped: map[string]int64{"invalid_value": 1},
		},
		{
			name: "invalid type wins over allowlist",
			cfg:  func(c *Config) { c.EventTypes = []string{"signup"} },
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("\xc3")
			},
			wantKeys:    map[string]int64{},
			wantDropped: map[string]int64{"invalid_value": 1},
		},
		{
			name: "unicode type and user",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("vue_page_été")
				lr.Attributes().PutStr("user.id", "用户:42")
			},
			wantKeys: eventKeys("vue_page_été", "用户:42", tsRecord),
		},
		{
			name: "separator and braces are escaped",
			setup: func(lr plog.LogRecord, _ pcommon.Resource) {
				lr.SetEventName("a:b{c}")
				lr.Attributes().PutStr("user.id", "team:1 x")
			},
			wantKeys: eventKeys("a:b{c}", "team:1 x", tsRecord),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := createDefaultConfig().(*Config)
			if tt.cfg != nil {
				tt.cfg(cfg)
			}
			ld := plog.NewLogs()
			rl := ld.ResourceLogs().AppendEmpty()
			lr := rl.ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
			lr.SetTimestamp(ts(tsRecord))
			tt.setup(lr, rl.Resource())

			got, dropped := counters(t, cfg, logsFill(ld), tsNow)
			assert.Equal(t, tt.wantKeys, got)
			if tt.wantDropped == nil {
				tt.wantDropped = map[string]int64{}
			}
			assert.Equal(t, tt.wantDropped, dropped)
		})
	}
}

func TestMapSpan(t *testing.T) {
	t.Parallel()
	ts := pcommon.NewTimestampFromTime
	tests := []struct {
		name        string
		setup       func(span ptrace.Span, res pcommon.Resource)
		wantKeys    map[string]int64
		wantDropped map[string]int64
	}{
		{
			name: "span name and start time",
			setup: func(span ptrace.Span, _ pcommon.Resource) {
				span.SetName("checkout")
				span.SetStartTimestamp(ts(tsRecord))
				span.SetEndTimestamp(ts(tsObserved))
			},
			wantKeys: eventKeys("checkout", "", tsRecord),
		},
		{
			name: "event.name attribute is not used for spans",
			setup: func(span ptrace.Span, _ pcommon.Resource) {
				span.SetName("checkout")
				span.Attributes().PutStr("event.name", "other")
				span.SetStartTimestamp(ts(tsRecord))
			},
			wantKeys: eventKeys("checkout", "", tsRecord),
		},
		{
			name:        "empty span name",
			setup:       func(span ptrace.Span, _ pcommon.Resource) { span.SetStartTimestamp(ts(tsRecord)) },
			wantKeys:    map[string]int64{},
			wantDropped: map[string]int64{"missing_event_type": 1},
		},
		{
			name:     "now when the start time is zero",
			setup:    func(span ptrace.Span, _ pcommon.Resource) { span.SetName("checkout") },
			wantKeys: eventKeys("checkout", "", tsNow),
		},
		{
			name: "user on span wins over resource",
			setup: func(span ptrace.Span, res pcommon.Resource) {
				span.SetName("checkout")
				span.SetStartTimestamp(ts(tsRecord))
				span.Attributes().PutInt("enduser.id", 99)
				res.Attributes().PutStr("user.id", "res-user")
			},
			wantKeys: eventKeys("checkout", "99", tsRecord),
		},
		{
			name: "user on resource",
			setup: func(span ptrace.Span, res pcommon.Resource) {
				span.SetName("checkout")
				span.SetStartTimestamp(ts(tsRecord))
				res.Attributes().PutStr("enduser.id", "res-user")
			},
			wantKeys: eventKeys("checkout", "res-user", tsRecord),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			td := ptrace.NewTraces()
			rs := td.ResourceSpans().AppendEmpty()
			tt.setup(rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty(), rs.Resource())
			got, dropped := counters(t, createDefaultConfig().(*Config), tracesFill(td), tsNow)
			assert.Equal(t, tt.wantKeys, got)
			if tt.wantDropped == nil {
				tt.wantDropped = map[string]int64{}
			}
			assert.Equal(t, tt.wantDropped, dropped)
		})
	}
}

func TestIntAndStringUserShareCounters(t *testing.T) {
	t.Parallel()
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for _, set := range []func(pcommon.Map){
		func(m pcommon.Map) { m.PutInt("user.id", 42) },
		func(m pcommon.Map) { m.PutStr("user.id", "42") },
	} {
		lr := lrs.AppendEmpty()
		lr.SetEventName("signup")
		lr.SetTimestamp(pcommon.NewTimestampFromTime(tsRecord))
		set(lr.Attributes())
	}
	got, _ := counters(t, createDefaultConfig().(*Config), logsFill(ld), tsNow)
	want := eventKeys("signup", "42", tsRecord)
	for k := range want {
		want[k] = 2
	}
	assert.Equal(t, want, got)
}

func TestValidValue(t *testing.T) {
	t.Parallel()
	assert.True(t, validValue(""))
	assert.True(t, validValue("été"))
	assert.True(t, validValue(strings.Repeat("é", 256))) // 512 bytes
	assert.False(t, validValue(strings.Repeat("é", 256)+"a"))
	assert.False(t, validValue("\xff"))
	assert.False(t, validValue("\x00"))
}

func TestDropReasonString(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "missing_event_type", reasonMissingEventType.String())
	assert.Equal(t, "not_allowed", reasonNotAllowed.String())
	assert.Equal(t, "invalid_value", reasonInvalidValue.String())
	assert.Equal(t, "unknown", numDropReasons.String())
}
