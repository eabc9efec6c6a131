package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMedians(t *testing.T) {
	t.Parallel()
	line := func(name string, iters int64, eventsPerSec, allocs float64) benchLine {
		return benchLine{pkg: "p", run: "r", name: name, iters: iters, metrics: []benchMetric{
			{value: eventsPerSec, unit: "events/s"}, {value: allocs, unit: "allocs/op"},
		}}
	}
	tests := []struct {
		name string
		in   []benchLine
		want []benchLine
	}{
		{name: "none", in: nil, want: nil},
		{
			name: "single runs are kept",
			in:   []benchLine{line("A", 10, 5, 1), line("B", 20, 6, 2)},
			want: []benchLine{withRuns(line("A", 10, 5, 1), 1), withRuns(line("B", 20, 6, 2), 1)},
		},
		{
			name: "odd count: the middle value of each metric",
			in:   []benchLine{line("A", 10, 5, 3), line("A", 30, 1, 1), line("A", 20, 9, 2)},
			want: []benchLine{withRuns(line("A", 20, 5, 2), 3)},
		},
		{
			name: "even count: the mean of the middle two; order of first appearance",
			in:   []benchLine{line("B", 10, 4, 1), line("A", 1, 1, 1), line("B", 30, 8, 3), line("A", 3, 3, 3)},
			want: []benchLine{withRuns(line("B", 20, 6, 2), 2), withRuns(line("A", 2, 2, 2), 2)},
		},
		{
			name: "same name in another run is another benchmark",
			in:   []benchLine{line("A", 10, 5, 1), func() benchLine { l := line("A", 20, 7, 1); l.run = "other"; return l }()},
			want: []benchLine{
				withRuns(line("A", 10, 5, 1), 1),
				func() benchLine { l := withRuns(line("A", 20, 7, 1), 1); l.run = "other"; return l }(),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, medians(tt.in))
		})
	}
}

func withRuns(l benchLine, runs int) benchLine {
	l.runs = runs
	return l
}

func TestParseBenchOutput(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bench.log")
	out := `goos: linux
goarch: amd64
BenchmarkPushLogs/users=100-2         	     536	   2396000 ns/op	         0.0001221 commands/event	   3420000 events/s	 329900 B/op	     569 allocs/op
BenchmarkAppendKey 	16876674	        88.00 ns/op	       0 B/op	       0 allocs/op
--- FAIL: BenchmarkBroken
PASS
`
	require.NoError(t, os.WriteFile(path, []byte(out), 0o600))
	lines, failures := parseBenchOutput(path, "p", "r")
	require.Len(t, lines, 2)
	assert.Equal(t, "BenchmarkPushLogs/users=100", lines[0].name)
	assert.Equal(t, int64(536), lines[0].iters)
	v, ok := lines[0].metric("events/s")
	require.True(t, ok)
	assert.InDelta(t, 3.42e6, v, 1)
	assert.Equal(t, "BenchmarkAppendKey", lines[1].name)
	assert.Equal(t, []string{"--- FAIL: BenchmarkBroken"}, failures)
}
