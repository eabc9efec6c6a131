package sdkload

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResultJSONRoundTrip(t *testing.T) {
	t.Parallel()
	in := Result{
		Emitted:  5,
		Exported: 4,
		Latency:  LatencySummary{Count: 1, P50: time.Millisecond, P99: time.Millisecond, Max: time.Millisecond},
		Elapsed:  time.Second,
		Expected: Expected{
			{EventType: "page_view", Day: "2026-12-06"}: 2,
			{EventType: "a|b 🎉", Day: "2026-12-07"}:     2,
			{EventType: "", Day: "2026-12-07"}:          1,
		},
	}
	data, err := json.Marshal(in)
	require.NoError(t, err)
	assert.Contains(t, string(data), `"2026-12-07|a|b 🎉":2`)
	var out Result
	require.NoError(t, json.Unmarshal(data, &out))
	assert.Equal(t, in, out)
	assert.Equal(t, int64(5), out.Expected.Total())
	assert.Equal(t, int64(1), out.Dropped())
}

func TestEventDayRejectsText(t *testing.T) {
	t.Parallel()
	for _, text := range []string{"", "page_view", "2026-12|page_view"} {
		var k EventDay
		assert.ErrorIs(t, k.UnmarshalText([]byte(text)), errEventDayText, text)
	}
}
