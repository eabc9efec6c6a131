package pgflushextension

import (
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

func testSchema(t testing.TB) protocol.Schema {
	t.Helper()
	s, err := protocol.New("analytics")
	require.NoError(t, err)
	return s
}

func TestParseBatchAggregatesAndSorts(t *testing.T) {
	t.Parallel()
	s := testSchema(t)
	k := s.Key
	fields := []protocol.StagedField{
		{Key: k(daily("b", day1)), Value: "2"},
		{Key: k(daily("a", day2)), Value: "3"},
		{Key: k(daily("a", day1)), Value: "4"},
		// The same primary key twice in one batch must be summed, never sent
		// twice to one INSERT ... ON CONFLICT DO UPDATE.
		{Key: k(daily("a", day1)), Value: "6"},
		{Key: k(hourly("h", day2)), Value: "1"},
		{Key: k(hourly("h", day1)), Value: "-1"},
		{Key: k(userDaily("zoë", "t", day1)), Value: "9"},
		{Key: k(userDaily("adam", "t", day1)), Value: "8"},
	}
	b := parseBatch(s, fields)
	assert.Equal(t, len(fields), b.counters)
	assert.Empty(t, b.quarantine)

	d := b.rows(protocol.Daily)
	assert.Equal(t, []string{"a", "a", "b"}, d.eventTypes)
	day := int32(protocol.HourOf(day1) / 24) //nolint:gosec // a 2025 date fits
	assert.Equal(t, []int32{day, day + 1, day}, d.days)
	assert.Equal(t, []int64{10, 3, 2}, d.counts)

	h := b.rows(protocol.Hourly)
	assert.Equal(t, []int64{protocol.HourOf(day1), protocol.HourOf(day2)}, h.hours)
	assert.Equal(t, []int64{-1, 1}, h.counts)

	u := b.rows(protocol.UserDaily)
	assert.Equal(t, []string{"adam", "zoë"}, u.userIDs)
	assert.Equal(t, []int64{8, 9}, u.counts)
}

func TestParseBatchQuarantine(t *testing.T) {
	t.Parallel()
	s := testSchema(t)
	tests := []struct {
		name   string
		field  protocol.StagedField
		incr   bool
		reason string
	}{
		{"value not an integer", protocol.StagedField{Key: s.Key(daily("a", day1)), Value: "1.5"}, false, "value is not an integer"},
		{"marker", protocol.StagedField{Key: "other:key", Value: protocol.MarkerForeign}, false, "value is not an integer"},
		{"overflowing value", protocol.StagedField{Key: s.Key(daily("a", day1)), Value: "9223372036854775808"}, false, "value is not an integer"},
		{"foreign key", protocol.StagedField{Key: "other:counter:a:2025-06-01", Value: "1"}, true, "does not belong"},
		{"bad shape", protocol.StagedField{Key: "analytics:counter:a", Value: "1"}, true, "does not match"},
		{"bad escape", protocol.StagedField{Key: "analytics:counter:a%2:2025-06-01", Value: "1"}, true, "malformed"},
		{"invalid utf-8", protocol.StagedField{Key: "analytics:user:\xff:a:2025-06-01", Value: "1"}, true, "UTF-8"},
		{"nul byte", protocol.StagedField{Key: "analytics:counter:%00:2025-06-01", Value: "1"}, true, "UTF-8"},
		{"property count zero", protocol.StagedField{Key: s.Key(propDaily("a", "p", "v", day1)), Value: "0"}, true, "not positive"},
		{"property count negative", protocol.StagedField{Key: s.Key(propHourly("a", "p", "v", day1)), Value: "-1"}, true, "not positive"},
		{"property value not an integer", protocol.StagedField{Key: s.Key(propDaily("a", "p", "v", day1)), Value: "x"}, false, "value is not an integer"},
		{"sum not an integer", protocol.StagedField{Key: s.Key(sumDaily("a", "n", day1)), Value: "1e3"}, false, "value is not an integer"},
		{"sum overflowing value", protocol.StagedField{Key: s.Key(sumHourly("a", "n", day1)), Value: "-9223372036854775809"}, false, "value is not an integer"},
		{"property value invalid utf-8", protocol.StagedField{Key: "analytics:prop:a:p:\xff:2025-06-01", Value: "1"}, true, "UTF-8"},
		{"property nul", protocol.StagedField{Key: "analytics:prop:a:%00:v:2025-06-01:03", Value: "1"}, true, "UTF-8"},
		{"sum attribute invalid utf-8", protocol.StagedField{Key: "analytics:sum:a:\xc3:2025-06-01", Value: "1"}, true, "UTF-8"},
		{"property empty value", protocol.StagedField{Key: "analytics:prop:a:p::2025-06-01", Value: "1"}, true, "empty"},
		{"property short", protocol.StagedField{Key: "analytics:prop:a:p:2025-06-01", Value: "1"}, true, "does not match"},
		{"sum long", protocol.StagedField{Key: "analytics:sum:a:n:x:2025-06-01:01", Value: "1"}, true, "does not match"},
		{"sum bad hour", protocol.StagedField{Key: "analytics:sum:a:n:2025-06-01:24", Value: "1"}, true, "bad hour"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := parseBatch(s, []protocol.StagedField{tt.field})
			assert.Zero(t, b.counters)
			require.Len(t, b.quarantine, 1)
			assert.Equal(t, protocol.QuarantineOp{Incr: tt.incr, Field: tt.field.Key, Value: tt.field.Value}, b.quarantine[0])
			require.Len(t, b.quarantineSample, 1)
			assert.Contains(t, b.quarantineSample[0], tt.reason)
		})
	}
}

func TestParseBatchPropertyAndSumFamilies(t *testing.T) {
	t.Parallel()
	s := testSchema(t)
	k := s.Key
	fields := []protocol.StagedField{
		{Key: k(propDaily("gen", "model", "gpt-4", day2)), Value: "2"},
		{Key: k(propDaily("gen", "model", "a:b{c}", day1)), Value: "3"},
		{Key: k(propDaily("gen", "model", "gpt-4", day1)), Value: "4"},
		{Key: k(propDaily("gen", "model", "gpt-4", day1)), Value: "6"},
		{Key: k(propHourly("gen", "plan", "モデル", day1)), Value: "1"},
		{Key: k(propHourly("ev", "plan", "モデル", day1)), Value: "5"},
		{Key: k(sumDaily("gen", "tokens", day1)), Value: "-7"},
		{Key: k(sumDaily("gen", "cost", day1)), Value: "0"},
		{Key: k(sumDaily("gen", "cost", day1)), Value: "9"},
		{Key: k(sumHourly("gen", "tokens", day2)), Value: "9223372036854775807"},
		{Key: k(sumHourly("gen", "tokens", day1)), Value: "-9223372036854775808"},
	}
	b := parseBatch(s, fields)
	assert.Equal(t, len(fields), b.counters)
	assert.Empty(t, b.quarantine)
	day := int32(protocol.HourOf(day1) / 24) //nolint:gosec // a 2025 date fits

	pd := b.rows(protocol.PropertyDaily)
	assert.Equal(t, []string{"gen", "gen", "gen"}, pd.eventTypes)
	assert.Equal(t, []string{"model", "model", "model"}, pd.attributes)
	assert.Equal(t, []string{"a:b{c}", "gpt-4", "gpt-4"}, pd.values)
	assert.Equal(t, []int32{day, day, day + 1}, pd.days)
	assert.Equal(t, []int64{3, 10, 2}, pd.counts)
	assert.Nil(t, pd.hours)

	ph := b.rows(protocol.PropertyHourly)
	assert.Equal(t, []string{"ev", "gen"}, ph.eventTypes)
	assert.Equal(t, []string{"モデル", "モデル"}, ph.values)
	assert.Equal(t, []int64{protocol.HourOf(day1), protocol.HourOf(day1)}, ph.hours)
	assert.Equal(t, []int64{5, 1}, ph.counts)

	sd := b.rows(protocol.SumDaily)
	assert.Equal(t, []string{"cost", "tokens"}, sd.attributes)
	assert.Nil(t, sd.values)
	assert.Equal(t, []int64{9, -7}, sd.counts)

	sh := b.rows(protocol.SumHourly)
	assert.Equal(t, []int64{protocol.HourOf(day1), protocol.HourOf(day2)}, sh.hours)
	assert.Equal(t, []int64{math.MinInt64, math.MaxInt64}, sh.counts)
}

// TestParseBatchOverflowInBatch: a field whose addition would take its
// batch row past int64 is quarantined, in every family; the row keeps what
// it had.
func TestParseBatchOverflowInBatch(t *testing.T) {
	t.Parallel()
	s := testSchema(t)
	for _, c := range []protocol.Counter{
		daily("a", day1), hourly("a", day1), userDaily("u", "a", day1),
		propDaily("a", "p", "v", day1), propHourly("a", "p", "v", day1),
		sumDaily("a", "n", day1), sumHourly("a", "n", day1),
	} {
		t.Run(c.Family.String(), func(t *testing.T) {
			t.Parallel()
			key := s.Key(c)
			b := parseBatch(s, []protocol.StagedField{
				{Key: key, Value: "9223372036854775800"},
				{Key: key, Value: "8"},
				{Key: key, Value: "7"},
			})
			assert.Equal(t, 2, b.counters)
			require.Len(t, b.quarantine, 1)
			assert.Equal(t, protocol.QuarantineOp{Incr: true, Field: key, Value: "8"}, b.quarantine[0])
			assert.Contains(t, b.quarantineSample[0], "overflows int64")
			assert.Equal(t, []int64{math.MaxInt64}, b.rows(c.Family).counts)
		})
	}
	key := s.Key(sumDaily("a", "n", day1))
	b := parseBatch(s, []protocol.StagedField{{Key: key, Value: "-9223372036854775800"}, {Key: key, Value: "-9"}})
	assert.Len(t, b.quarantine, 1, "downwards too")
}

func TestParseBatchBoundsLogSample(t *testing.T) {
	t.Parallel()
	var fields []protocol.StagedField
	for i := range 50 {
		fields = append(fields, protocol.StagedField{Key: "junk" + strconv.Itoa(i), Value: "1"})
	}
	b := parseBatch(testSchema(t), fields)
	assert.Len(t, b.quarantine, 50)
	assert.Len(t, b.quarantineSample, maxQuarantineSample)
}

// FuzzParseBatch checks that every staged field is either counted or
// quarantined (never dropped) and that the aggregated rows add up.
func FuzzParseBatch(f *testing.F) {
	s, err := protocol.New("analytics")
	require.NoError(f, err)
	f.Add("analytics:counter:page_view:2025-06-01", "5")
	f.Add("analytics:counter:a%3Ab:2025-06-01:23", "-3")
	f.Add("analytics:user:u%7B1%7D:t:2025-06-01", "9223372036854775807")
	f.Add("analytics:user:\xff:t:2025-06-01", "1")
	f.Add("analytics:prop:generation_completed:model:gpt-4:2025-06-01", "3")
	f.Add("analytics:prop:t%3A1:p%7B%7D:%E2%9C%93:2025-06-01:07", "1")
	f.Add("analytics:prop:t:p:v:2025-06-01", "0")
	f.Add("analytics:prop:t:p:%FF:2025-06-01", "1")
	f.Add("analytics:sum:t:gen_ai.usage.output_tokens:2025-06-01", "-42")
	f.Add("analytics:sum:t:n:2025-06-01:23", "0")
	f.Add("analytics:sum:t:n:2025-06-01:23", "-9223372036854775808")
	f.Add("analytics:seen:values:model:2025-06-01", "1")
	f.Add("garbage", "x")
	f.Fuzz(func(t *testing.T, key, value string) {
		b := parseBatch(s, []protocol.StagedField{{Key: key, Value: value}, {Key: key, Value: value}})
		assert.Equal(t, 2, b.counters+len(b.quarantine))
		var rows int
		for _, fam := range families {
			r := b.rows(fam)
			rows += r.len()
			for _, col := range [][]string{r.eventTypes, r.userIDs, r.attributes, r.values} {
				for _, txt := range col {
					assert.True(t, storableText(txt))
				}
			}
			if fam == protocol.PropertyDaily || fam == protocol.PropertyHourly {
				for _, n := range r.counts {
					assert.Positive(t, n, "a property count is positive")
				}
			}
		}
		if b.counters > 0 {
			assert.Equal(t, 1, rows, "one key twice aggregates into one row")
			n, err := strconv.ParseInt(value, 10, 64)
			require.NoError(t, err)
			var got int64
			for _, fam := range families {
				for _, c := range b.rows(fam).counts {
					got = c
				}
			}
			if b.counters == 2 {
				assert.Equal(t, 2*n, got, "the row holds both")
			} else {
				assert.Equal(t, n, got, "the second overflowed and was quarantined")
			}
		}
	})
}

// BenchmarkParseBatch parses one default-sized batch of staged fields: only
// per-user counters (the common case), and a mix of every family.
func BenchmarkParseBatch(b *testing.B) {
	s, err := protocol.New("bench")
	require.NoError(b, err)
	mixed := make([]protocol.StagedField, 0, defaultBatchSize)
	for i := range defaultBatchSize {
		typ := benchEventTypes[i%4]
		at := day1.Add(time.Duration(i%24) * time.Hour)
		var c protocol.Counter
		switch i % 7 {
		case 0:
			c = daily(typ+strconv.Itoa(i), at)
		case 1:
			c = hourly(typ+strconv.Itoa(i), at)
		case 2:
			c = benchUserCounter(i)
		case 3:
			c = propDaily(typ, "model", "v-"+strconv.Itoa(i), at)
		case 4:
			c = propHourly(typ, "model", "v-"+strconv.Itoa(i), at)
		case 5:
			c = sumDaily(typ, "n-"+strconv.Itoa(i), at)
		default:
			c = sumHourly(typ, "n-"+strconv.Itoa(i), at)
		}
		mixed = append(mixed, protocol.StagedField{Key: s.Key(c), Value: strconv.Itoa(i%97 + 1)})
	}
	for _, bc := range []struct {
		name   string
		fields []protocol.StagedField
	}{
		{"UserDaily", userDailyFields(s, 0, defaultBatchSize)},
		{"AllFamilies", mixed},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				pb := parseBatch(s, bc.fields)
				for _, f := range families {
					_ = pb.rows(f)
				}
				if pb.counters != len(bc.fields) {
					b.Fatalf("counted %d of %d", pb.counters, len(bc.fields))
				}
			}
			b.ReportMetric(float64(len(bc.fields))*float64(b.N)/b.Elapsed().Seconds(), "fields/s")
		})
	}
}
