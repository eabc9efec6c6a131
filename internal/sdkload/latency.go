package sdkload

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// LatencySummary describes the durations of a set of export calls, exactly
// (every call is kept; a run makes a few hundred).
type LatencySummary struct {
	Count int
	P50   time.Duration
	P99   time.Duration
	Max   time.Duration
}

func (s LatencySummary) String() string {
	return fmt.Sprintf("n=%d p50=%s p99=%s max=%s", s.Count, s.P50, s.P99, s.Max)
}

// summarize sorts durations in place and returns their summary.
func summarize(durations []time.Duration) LatencySummary {
	if len(durations) == 0 {
		return LatencySummary{}
	}
	slices.Sort(durations)
	return LatencySummary{
		Count: len(durations),
		P50:   percentile(durations, 50),
		P99:   percentile(durations, 99),
		Max:   durations[len(durations)-1],
	}
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the smallest value that at least p % of the values do not exceed.
// It returns 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
