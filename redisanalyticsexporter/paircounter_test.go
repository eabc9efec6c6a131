package redisanalyticsexporter

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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
