package redisanalyticsexporter

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// logRecord describes one record for newLogs.
type logRecord struct {
	typ  string
	user string
	at   time.Time
}

// newLogs builds logs with each group of records under its own resource and
// scope, so aggregation has to fold across them.
// newLogs builds one resource entry per group, with records that carry no
// identity (counted at least once; dedupLogs builds identified ones).
func newLogs(groups ...[]logRecord) plog.Logs {
	ld := plog.NewLogs()
	for _, g := range groups {
		rl := ld.ResourceLogs().AppendEmpty()
		rl.Resource().Attributes().PutStr("service.name", "shop")
		lrs := rl.ScopeLogs().AppendEmpty().LogRecords()
		for _, r := range g {
			lr := lrs.AppendEmpty()
			lr.SetEventName(r.typ)
			if r.user != "" {
				lr.Attributes().PutStr("user.id", r.user)
			}
			lr.SetTimestamp(pcommon.NewTimestampFromTime(r.at))
		}
	}
	return ld
}

func key(c protocol.Counter) string {
	s, _ := protocol.New(protocol.DefaultPrefix)
	return s.Key(c)
}

func TestAggregateFoldsAcrossResourcesAndScopes(t *testing.T) {
	t.Parallel()
	h9 := time.Date(2025, 6, 1, 9, 10, 0, 0, time.UTC)
	h10 := time.Date(2025, 6, 1, 10, 59, 0, 0, time.UTC)
	next := time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC) // next day, hour 00
	ld := newLogs(
		[]logRecord{{"view", "u1", h9}, {"view", "u1", h9}, {"view", "u2", h10}},
		[]logRecord{{"view", "u1", h9}, {"buy", "", h10}, {"view", "u1", next}},
	)
	got, dropped := counters(t, createDefaultConfig().(*Config), logsFill(ld), tsNow)
	hour := protocol.HourOf(h9)
	day := hour - hour%24
	nextDay := day + 24
	want := map[string]int64{
		key(protocol.Counter{Family: protocol.Daily, EventType: "view", Hour: day}):                       4,
		key(protocol.Counter{Family: protocol.Daily, EventType: "view", Hour: nextDay}):                   1,
		key(protocol.Counter{Family: protocol.Daily, EventType: "buy", Hour: day}):                        1,
		key(protocol.Counter{Family: protocol.Hourly, EventType: "view", Hour: hour}):                     3,
		key(protocol.Counter{Family: protocol.Hourly, EventType: "view", Hour: hour + 1}):                 1,
		key(protocol.Counter{Family: protocol.Hourly, EventType: "view", Hour: nextDay}):                  1,
		key(protocol.Counter{Family: protocol.Hourly, EventType: "buy", Hour: hour + 1}):                  1,
		key(protocol.Counter{Family: protocol.UserDaily, EventType: "view", UserID: "u1", Hour: day}):     3,
		key(protocol.Counter{Family: protocol.UserDaily, EventType: "view", UserID: "u2", Hour: day}):     1,
		key(protocol.Counter{Family: protocol.UserDaily, EventType: "view", UserID: "u1", Hour: nextDay}): 1,
	}
	assert.Equal(t, want, got)
	assert.Empty(t, dropped)
}

func TestAggregateManyRecordsOneKeyEach(t *testing.T) {
	t.Parallel()
	records := make([]logRecord, 1000)
	for i := range records {
		records[i] = logRecord{"view", "u1", tsRecord}
	}
	got, _ := counters(t, createDefaultConfig().(*Config), logsFill(newLogs(records)), tsNow)
	want := eventKeys("view", "u1", tsRecord)
	for k := range want {
		want[k] = 1000
	}
	assert.Equal(t, want, got)
}

func TestAggregatorReuse(t *testing.T) {
	t.Parallel()
	cfg := createDefaultConfig().(*Config)
	schema, err := protocol.New(cfg.KeyPrefix)
	require.NoError(t, err)
	m := newMapper(cfg)
	a := newAggregator(testSchema)

	a.addLogs(newLogs([]logRecord{{"view", "u1", tsRecord}, {"", "", tsRecord}}), &m, tsNow.UnixNano())
	a.finalize(&m)
	a.encode([]string{"b1"}, testTTLs, cfg.CardinalityLimits, nil)
	assert.Len(t, a.layout(t).Counters, 3)
	assert.Equal(t, int64(1), a.dropped[reasonMissingEventType])

	a.reset()
	a.addLogs(newLogs([]logRecord{{"buy", "", tsRecord}}), &m, tsNow.UnixNano())
	a.finalize(&m)
	a.encode([]string{"b1"}, testTTLs, CardinalityLimits{}, nil)
	assert.Equal(t, [numDropReasons]int64{}, a.dropped)
	assert.Equal(t, int64(1), a.counted)
	l := a.layout(t)
	assert.Equal(t, schema.PendingKey(), l.Pending)
	assert.Equal(t, []string{schema.BatchKey("b1")}, l.Batches)
	assert.Empty(t, l.Guards, "no caps, no guards")
	assert.Equal(t, map[string]int64{
		key(protocol.Counter{Family: protocol.Daily, EventType: "buy", Hour: protocol.HourOf(tsRecord) / 24 * 24}): 1,
		key(protocol.Counter{Family: protocol.Hourly, EventType: "buy", Hour: protocol.HourOf(tsRecord)}):          1,
	}, increments(t, l))
	assert.Equal(t, []int64{10, 30, 40}, []int64{l.CounterTTL, l.BatchMarkerTTL, l.ResourceMarkerTTL})
}

func TestAggregatorReusable(t *testing.T) {
	t.Parallel()
	a := newAggregator(testSchema)
	assert.True(t, a.reusable())
	for i := range maxPooledEntries + 1 {
		k := pairKey{typ: "view", user: userRef{num: int64(i), kind: userInt}}
		a.pairIndex(k, hashPair(k))
	}
	assert.False(t, a.reusable(), "an aggregator that grew past the bound is not pooled")
}

// FuzzMapping feeds arbitrary attribute values and timestamps through
// mapping and aggregation: nothing panics, a record outside the time horizon
// is dropped with its reason, and every key parses back with protocol.Schema
// to the event type and user id the record carried.
func FuzzMapping(f *testing.F) {
	f.Add("signup", "", "u1", "", int64(0), false, uint64(1_748_769_300_000_000_000))
	f.Add("", "page:view", "", "team{1}", int64(0), false, uint64(0))
	f.Add("", "", "", "", int64(-5), true, uint64(1))
	f.Add("été\x00", "x", "\xff", "r", int64(0), false, uint64(1<<63))
	f.Add("a%3Ab", "", "%", "", int64(0), false, uint64(42))
	f.Fuzz(func(t *testing.T, eventName, attrType, user, resUser string, userNum int64, intUser bool, ts uint64) {
		cfg := createDefaultConfig().(*Config)
		schema, err := protocol.New(cfg.KeyPrefix)
		require.NoError(t, err)
		ld := plog.NewLogs()
		rl := ld.ResourceLogs().AppendEmpty()
		rl.Resource().Attributes().PutStr("user.id", resUser)
		lr := rl.ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
		lr.SetEventName(eventName)
		lr.Attributes().PutStr("event.name", attrType)
		if intUser {
			lr.Attributes().PutInt("enduser.id", userNum)
		} else {
			lr.Attributes().PutStr("enduser.id", user)
		}
		lr.SetTimestamp(pcommon.Timestamp(ts))

		wantType := eventName
		if wantType == "" {
			wantType = attrType
		}
		wantUser := resUser
		switch {
		case intUser:
			wantUser = strconv.FormatInt(userNum, 10)
		case user != "":
			wantUser = user
		}

		m := newMapper(cfg)
		a := newAggregator(testSchema)
		a.addLogs(ld, &m, tsNow.UnixNano())
		a.finalize(&m)
		a.encode([]string{"b1"}, testTTLs, cfg.CardinalityLimits, nil)
		l := a.layout(t)

		stamp := validNanos(pcommon.Timestamp(ts))
		if stamp == 0 {
			stamp = tsNow.UnixNano() // the clock stands in for a missing time
		}
		switch {
		case wantType == "":
			require.Equal(t, int64(1), a.dropped[reasonMissingEventType])
			require.Empty(t, l.Counters)
			return
		case stamp < tsNow.UnixNano()-int64(cfg.MaxEventAge):
			require.Equal(t, int64(1), a.dropped[reasonTooOld])
			require.Empty(t, l.Counters)
			return
		case stamp > tsNow.UnixNano()+int64(cfg.MaxClockSkew):
			require.Equal(t, int64(1), a.dropped[reasonInFuture])
			require.Empty(t, l.Counters)
			return
		case !validValue(wantType) || !validValue(wantUser):
			require.Equal(t, int64(1), a.dropped[reasonInvalidValue])
			require.Empty(t, l.Counters)
			return
		}
		wantKeys := 2
		if wantUser != "" {
			wantKeys = 3
		}
		require.Len(t, l.Counters, wantKeys)
		for _, lc := range l.Counters {
			k := lc.Key
			c, err := schema.Parse(k)
			require.NoError(t, err, k)
			require.Equal(t, wantType, c.EventType, k)
			if c.Family == protocol.UserDaily {
				require.Equal(t, wantUser, c.UserID, k)
			}
			require.True(t, protocol.ValidHour(c.Hour))
			require.Equal(t, int64(1), lc.Incr)
		}
	})
}

func TestAggregateBackfillBeyondPairHours(t *testing.T) {
	t.Parallel()
	// One user with far more distinct hours than a pair keeps in its list,
	// plus an invalid user whose overflow must be dropped with it.
	const hours = 3*maxPairHours + 5
	var records []logRecord
	for h := range hours {
		at := tsRecord.Add(time.Duration(h) * time.Hour)
		records = append(records, logRecord{"view", "u1", at}, logRecord{"view", "u1", at}, logRecord{"view", "bad\xff", at})
	}
	now := tsRecord.Add(hours * time.Hour) // every record inside the horizon
	got, dropped := counters(t, createDefaultConfig().(*Config), logsFill(newLogs(records)), now)
	assert.Equal(t, map[string]int64{"invalid_value": hours}, dropped)

	schema, err := protocol.New(protocol.DefaultPrefix)
	require.NoError(t, err)
	want := map[string]int64{}
	for h := range hours {
		hour := protocol.HourOf(tsRecord) + int64(h)
		day := hour - hour%24
		want[schema.Key(protocol.Counter{Family: protocol.Hourly, EventType: "view", Hour: hour})] = 2
		want[schema.Key(protocol.Counter{Family: protocol.Daily, EventType: "view", Hour: day})] += 2
		want[schema.Key(protocol.Counter{Family: protocol.UserDaily, EventType: "view", UserID: "u1", Hour: day})] += 2
	}
	assert.Equal(t, want, got)
}

func TestPairCounterKeepsPairsApart(t *testing.T) {
	t.Parallel()
	// Keys that share a type, a user string or a user number with another
	// one must still get pairs of their own.
	keys := []pairKey{
		{typ: "view", user: userRef{str: "1", kind: userStr}},
		{typ: "view", user: userRef{num: 1, kind: userInt}},
		{typ: "view"},
		{typ: "buy", user: userRef{str: "1", kind: userStr}},
		{typ: "buy", user: userRef{num: 1, kind: userInt}},
		{typ: "buy"},
		{typ: "", user: userRef{str: "view", kind: userStr}},
		{typ: "view", user: userRef{str: "", kind: userStr}},
	}
	pc := newPairCounter()
	for round := range 2 { // the second round reuses the reset counter's maps
		for i, k := range keys {
			for hour := range int64(3) {
				n := len(pc.pairs)
				idx := pc.count(k, hour, int64(i+1))
				require.Equal(t, int32(i), idx, "round %d, key %+v", round, k)
				assert.Equal(t, hour == 0, len(pc.pairs) > n, "new pair")
			}
		}
		require.Len(t, pc.pairs, len(keys))
		for i, k := range keys {
			p := pc.pairs[i]
			assert.Equal(t, k, p.key)
			assert.Equal(t, []hourCount{{0, int64(i + 1)}, {1, int64(i + 1)}, {2, int64(i + 1)}}, p.hours)
		}
		pc.reset()
		assert.Empty(t, pc.pairs)
	}
}

func TestPairCounterOverflowHours(t *testing.T) {
	t.Parallel()
	pc := newPairCounter()
	k := pairKey{typ: "view"}
	for hour := range int64(maxPairHours + 3) {
		pc.count(k, hour, 2)
	}
	pc.count(k, maxPairHours+1, 5)
	require.Len(t, pc.pairs, 1)
	assert.Len(t, pc.pairs[0].hours, maxPairHours)
	assert.Equal(t, int64(11), pc.pairs[0].overflowN)
	assert.Equal(t, map[pairHour]int64{{0, maxPairHours}: 2, {0, maxPairHours + 1}: 7, {0, maxPairHours + 2}: 2}, pc.overflow)
}

func TestPairCounterHashCollision(t *testing.T) {
	t.Parallel()
	// Two pairs with one hash (forced: a real 64-bit collision is not
	// practical to find) are still counted apart.
	pc := newPairCounter()
	a, b := pairKey{typ: "view"}, pairKey{typ: "buy"}
	const h = 42
	for range 2 {
		assert.Equal(t, int32(0), pc.pairIndex(a, h))
		assert.Equal(t, int32(1), pc.pairIndex(b, h))
	}
	require.Len(t, pc.pairs, 2)
	assert.Equal(t, a, pc.pairs[0].key)
	assert.Equal(t, b, pc.pairs[1].key)
}
