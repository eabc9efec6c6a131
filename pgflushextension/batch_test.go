package pgflushextension

import (
	"strconv"
	"testing"

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
	f.Add("garbage", "x")
	f.Fuzz(func(t *testing.T, key, value string) {
		b := parseBatch(s, []protocol.StagedField{{Key: key, Value: value}, {Key: key, Value: value}})
		assert.Equal(t, 2, b.counters+len(b.quarantine))
		var rows int
		for _, fam := range families {
			r := b.rows(fam)
			rows += r.len()
			for _, txt := range append(r.eventTypes, r.userIDs...) {
				assert.True(t, storableText(txt))
			}
		}
		if b.counters > 0 {
			assert.Equal(t, 1, rows, "one key twice aggregates into one row")
		}
	})
}
