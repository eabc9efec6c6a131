package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBaselineOf(t *testing.T) {
	base := &runResult{cfg: e2eConfig{key: keyBaseline}}
	paired := &runResult{cfg: e2eConfig{key: keyBaseline}}
	withPartner := &runResult{cfg: e2eConfig{key: keyAckRedis}, pairedBase: paired}
	inTurns := &runResult{cfg: e2eConfig{key: keyPersistent}}
	r := &report{e2e: []*runResult{base, withPartner, inTurns}}

	tests := []struct {
		name string
		rr   *runResult
		want *runResult
	}{
		{name: "paired schedule: the slices run alongside", rr: withPartner, want: paired},
		{name: "turns: the baseline's run", rr: inTurns, want: base},
		{name: "no run", rr: nil, want: base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Same(t, tt.want, r.baselineOf(tt.rr))
		})
	}
}

func TestPairedBaselineSlicesAreSummedApart(t *testing.T) {
	// The baseline's slice of a paired round goes into the partner's
	// pairedBase and, as a clone, into the baseline's own run: later slices
	// merged into one must not change the other.
	sig := signals[0]
	pairedBase, own := &runResult{}, &runResult{}
	first := &loadResult{signal: sig, accepted: 100, cpuSeconds: 1}
	pairedBase.add(first)
	own.add(first.clone())
	pairedBase.add(&loadResult{signal: sig, accepted: 300, cpuSeconds: 1})

	require.NotNil(t, own.load(sig.name))
	assert.InDelta(t, 100, own.load(sig.name).accepted, 0)
	assert.Equal(t, []float64{100}, own.load(sig.name).roundRates)
	assert.InDelta(t, 400, pairedBase.load(sig.name).accepted, 0)
	assert.Equal(t, []float64{100, 300}, pairedBase.load(sig.name).roundRates)
}
