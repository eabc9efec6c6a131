package protocol

import (
	"errors"
	"fmt"
	"strconv"
)

// ApplyLayout is an apply call's KEYS and ARGV read back into their parts
// (see apply.lua): what a test or a debugging tool sees of a recorded call.
// Counters are in KEYS order: the plain counts first.
type ApplyLayout struct {
	Pending  string
	Batches  []string
	Markers  []string
	Guards   []LaidOutGuard
	Counters []LaidOutCounter
	// TTLs in seconds: counter, batch marker, resource marker, guard.
	CounterTTL, BatchMarkerTTL, ResourceMarkerTTL, GuardTTL int64
}

// LaidOutGuard is a guard of a recorded call.
type LaidOutGuard struct {
	Key, Member string
	Limit       int64
}

// LaidOutCounter is a counter of a recorded call: its key, the keys its
// guards fold it into, its increment and guards (1-based, 0 for none).
type LaidOutCounter struct {
	Key       string
	Folded    []string
	Incr      int64
	TypeGuard int
	DimGuard  int
	Sum       bool
}

var errLayout = errors.New("apply call layout")

// ParseApplyArgs reads the KEYS and ARGV of an apply call; the values of
// argv may be numbers or their decimal strings (as Redis saw them).
func ParseApplyArgs(keys []string, argv []any) (ApplyLayout, error) {
	num := func(i int) (int64, error) {
		if i >= len(argv) {
			return 0, fmt.Errorf("%w: ARGV has %d values, want more than %d", errLayout, len(argv), i)
		}
		v, err := strconv.ParseInt(fmt.Sprint(argv[i]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: ARGV[%d]: %w", errLayout, i+1, err)
		}
		return v, nil
	}
	var l ApplyLayout
	head := make([]int64, headArgs)
	for i := range head {
		v, err := num(i)
		if err != nil {
			return l, err
		}
		head[i] = v
	}
	b, m, g := int(head[argNumBatches]), int(head[argNumMarkers]), int(head[argNumGuards])
	l.CounterTTL, l.BatchMarkerTTL, l.ResourceMarkerTTL, l.GuardTTL = head[argCounterTTL], head[argBatchMarkerTTL], head[argDedupWindow], head[argGuardTTL]
	if b < 0 || m < 0 || g < 0 || 1+b+m+g > len(keys) {
		return l, fmt.Errorf("%w: %d keys for %d batches, %d markers, %d guards", errLayout, len(keys), b, m, g)
	}
	l.Pending, l.Batches, l.Markers = keys[0], keys[1:1+b], keys[1+b:1+b+m]
	plain := int(head[argNumPlain])
	k, a := 1+b+m, headArgs
	for j := range g {
		limit, err := num(a + 1)
		if err != nil {
			return l, err
		}
		l.Guards = append(l.Guards, LaidOutGuard{Key: keys[k+j], Member: fmt.Sprint(argv[a]), Limit: limit})
		a += 2
	}
	k += g
	if plain < 0 || k+plain > len(keys) {
		return l, fmt.Errorf("%w: %d plain counts, %d keys left", errLayout, plain, len(keys)-k)
	}
	for range plain {
		incr, err := num(a)
		if err != nil {
			return l, err
		}
		l.Counters = append(l.Counters, LaidOutCounter{Key: keys[k], Folded: []string{}, Incr: incr})
		k++
		a++
	}
	for k < len(keys) {
		var c LaidOutCounter
		var vals [4]int64
		for i := range vals {
			v, err := num(a + i)
			if err != nil {
				return l, err
			}
			vals[i] = v
		}
		a += 4
		c.Incr, c.TypeGuard, c.DimGuard, c.Sum = vals[0], int(vals[1]), int(vals[2]), vals[3] == 1
		if c.TypeGuard < 0 || c.TypeGuard > g || c.DimGuard < 0 || c.DimGuard > g {
			return l, fmt.Errorf("%w: counter %d names guards %d, %d of %d", errLayout, len(l.Counters)+1, c.TypeGuard, c.DimGuard, g)
		}
		width := 1
		if c.TypeGuard > 0 {
			width = 2
		}
		if c.DimGuard > 0 {
			width *= 2
		}
		if k+width > len(keys) {
			return l, fmt.Errorf("%w: counter %d lacks its keys", errLayout, len(l.Counters)+1)
		}
		c.Key, c.Folded = keys[k], keys[k+1:k+width]
		k += width
		l.Counters = append(l.Counters, c)
	}
	if a != len(argv) {
		return l, fmt.Errorf("%w: %d ARGV values left over", errLayout, len(argv)-a)
	}
	return l, nil
}
