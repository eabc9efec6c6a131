package redisanalyticsexporter

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/pdata/plog"
)

// sameCounts compares what two requests would count (not the push state).
func sameCounts(t *testing.T, want, got *countsRequest) {
	t.Helper()
	assert.Equal(t, want.records, got.records)
	assert.Equal(t, want.bytes, got.bytes)
	assert.Equal(t, want.entries, got.entries)
}

func TestCountsEncodingRoundTrip(t *testing.T) {
	t.Parallel()
	intUser := plog.NewLogs()
	lr := intUser.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
	lr.SetEventName("credit")
	lr.Attributes().PutInt("user.id", -42)
	m := newMapper(createDefaultConfig().(*Config))

	tests := []struct {
		name string
		req  *countsRequest
	}{
		{"empty", &countsRequest{entries: []entryCounts{}}},
		{"entries and drops", testRequest(t,
			[]logRecord{{"view", "u1", tsRecord}, {"view", "", tsRecord}, {"", "", tsRecord}},
			[]logRecord{{"a:b%c", "user with spaces {x}", tsRecord.Add(-50 * 24 * 3600e9)}})},
		{"int user", newConverter().logs(intUser, &m, -3_600_000_000_000)}, // negative hour
		{"excluded and cut", func() *countsRequest {
			r := testRequest(t, manyRecords(10, 3, "view"))
			r.entries[0].excluded = true
			out, err := r.MergeSplit(t.Context(), 4, exporterhelper.RequestSizerTypeItems, nil)
			require.NoError(t, err)
			return out[0].(*countsRequest)
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.req.batchID = "not encoded"
			data, err := countsEncoding{}.Marshal(t.Context(), tt.req)
			require.NoError(t, err)
			ctx, got, err := countsEncoding{}.Unmarshal(data)
			require.NoError(t, err)
			require.NotNil(t, ctx)
			req := got.(*countsRequest)
			sameCounts(t, tt.req, req)
			assert.Empty(t, req.batchID, "a replayed request is a new batch")
		})
	}
}

func TestCountsEncodingRejectsCorruptInput(t *testing.T) {
	t.Parallel()
	valid, err := countsEncoding{}.Marshal(t.Context(), testRequest(t, []logRecord{{"view", "u1", tsRecord}, {"", "", tsRecord}}))
	require.NoError(t, err)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"nothing", nil, "truncated"},
		{"unknown version", append([]byte{9}, valid[1:]...), "unknown version 9"},
		{"truncated", valid[:len(valid)-1], "truncated"},
		{"trailing bytes", append(bytes.Clone(valid), 0), "1 trailing bytes"},
		{"record total", func() []byte { d := bytes.Clone(valid); d[1]++; return d }(), "entries hold 2 records, the request 3"},
		{"unreleased version 1", append([]byte{1}, valid[1:]...), "unknown version 1"},
		{"huge entry count", binary.AppendUvarint([]byte{countsEncodingVersion, 0}, 1<<40), "truncated"},
		{"pair index out of range", func() []byte {
			r := testRequest(t, []logRecord{{"view", "u1", tsRecord}})
			r.entries[0].counts[0].pair = 5
			d, marshalErr := countsEncoding{}.Marshal(t.Context(), r)
			require.NoError(t, marshalErr)
			return d
		}(), "pair 5 of 1"},
		{"unknown flags", func() []byte { d := bytes.Clone(valid); d[3] = 0x80; return d }(), "unknown entry flags"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, req, decodeErr := countsEncoding{}.Unmarshal(tt.data)
			require.ErrorIs(t, decodeErr, errCorruptRequest)
			require.ErrorContains(t, decodeErr, tt.want)
			assert.Nil(t, req)
		})
	}
	_, err = countsEncoding{}.Marshal(t.Context(), otherRequest{})
	require.ErrorContains(t, err, "cannot encode a request of type")
}

// FuzzCountsEncoding: Unmarshal never panics on arbitrary input, and what it
// accepts encodes and decodes to the same counts.
func FuzzCountsEncoding(f *testing.F) {
	seed := func(req *countsRequest) {
		data, err := countsEncoding{}.Marshal(context.Background(), req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	seed(&countsRequest{})
	seed(testRequest(f, []logRecord{{"view", "u1", tsRecord}, {"", "", tsRecord}}, []logRecord{{"buy", "", tsRecord}}))
	seed(testRequest(f, manyRecords(50, 7, "x")))
	f.Add([]byte{countsEncodingVersion, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, got, err := countsEncoding{}.Unmarshal(data)
		if err != nil {
			require.ErrorIs(t, err, errCorruptRequest)
			return
		}
		req := got.(*countsRequest)
		var sum int
		for _, en := range req.entries {
			require.GreaterOrEqual(t, en.missing, int64(0))
			require.LessOrEqual(t, en.missing, en.records)
			sum += int(en.records)
		}
		require.Equal(t, req.records, sum)
		again, err := countsEncoding{}.Marshal(t.Context(), req)
		require.NoError(t, err)
		_, back, err := countsEncoding{}.Unmarshal(again)
		require.NoError(t, err)
		sameCounts(t, req, back.(*countsRequest))
	})
}
