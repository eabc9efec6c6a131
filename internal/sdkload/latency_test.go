package sdkload

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	oneToHundred := make([]time.Duration, 100)
	for i := range oneToHundred {
		oneToHundred[i] = time.Duration(i + 1)
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single p50", []time.Duration{7}, 50, 7},
		{"single p99", []time.Duration{7}, 99, 7},
		{"two p50 is the lower", []time.Duration{1, 2}, 50, 1},
		{"two p99 is the upper", []time.Duration{1, 2}, 99, 2},
		{"four p50", []time.Duration{1, 2, 3, 4}, 50, 2},
		{"hundred p50", oneToHundred, 50, 50},
		{"hundred p99", oneToHundred, 99, 99},
		{"hundred p100", oneToHundred, 100, 100},
		{"hundred tiny p is the minimum", oneToHundred, 0.001, 1},
		{"ten p99 is the maximum", oneToHundred[:10], 99, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, percentile(tt.sorted, tt.p))
		})
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	assert.Equal(t, LatencySummary{}, summarize(nil))

	// 1..1000 ms shuffled: summarize sorts before it ranks.
	durations := make([]time.Duration, 1000)
	for i := range durations {
		durations[i] = time.Duration(i+1) * time.Millisecond
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(durations), func(i, j int) {
		durations[i], durations[j] = durations[j], durations[i]
	})
	assert.Equal(t, LatencySummary{
		Count: 1000,
		P50:   500 * time.Millisecond,
		P99:   990 * time.Millisecond,
		Max:   time.Second,
	}, summarize(durations))
}
