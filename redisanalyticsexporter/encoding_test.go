package redisanalyticsexporter

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/pdata/pcommon"
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
			[]logRecord{{"a:b%c", "user with spaces {x}", tsRecord.Add(-50 * 24 * time.Hour)}})},
		{"int user", newConverter().logs(intUser, &m, -3_600_000_000_000)}, // negative hour
		{"details", func() *countsRequest {
			r := detailsRequest()
			require.Len(t, r.entries, 1)
			en := r.entries[0]
			require.Equal(t, [3]int64{1, 1, 0}, [3]int64{en.tooOld, en.inFuture, en.missing})
			require.Len(t, en.props, 4) // model m:0 and m:1, plan free in two hours
			require.Len(t, en.sums, 2)
			require.Equal(t, int64(1), en.valueDrops[valueNotInteger])
			return r
		}()},
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

// sealed completes data (a version byte and a body) into a version 3 item
// with a valid checksum, so that a test reaches the checks behind it.
func sealed(data []byte) []byte {
	return binary.LittleEndian.AppendUint32(bytes.Clone(data), crc32.Checksum(data, castagnoli))
}

// unsealed returns a version 3 item without its checksum.
func unsealed(item []byte) []byte { return bytes.Clone(item[:len(item)-checksumBytes]) }

func TestCountsEncodingRejectsCorruptInput(t *testing.T) {
	t.Parallel()
	valid, err := countsEncoding{}.Marshal(t.Context(), testRequest(t, []logRecord{{"view", "u1", tsRecord}, {"", "", tsRecord}}))
	require.NoError(t, err)
	require.Equal(t, byte(countsEncodingVersion), valid[0])
	body := unsealed(valid) // version and body, without the checksum
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"nothing", nil, "truncated"},
		{"only the version", []byte{countsEncodingVersion}, "truncated"},
		{"no room for the checksum", []byte{countsEncodingVersion, 0, 0}, "truncated"},
		{"unknown version", append([]byte{9}, valid[1:]...), "unknown version 9"},
		{"unreleased version 1", append([]byte{1}, valid[1:]...), "unknown version 1"},
		{"unreleased version 2", append([]byte{2}, valid[1:]...), "unknown version 2"},
		{"truncated", valid[:len(valid)-1], "checksum mismatch"},
		{"trailing byte", append(bytes.Clone(valid), 0), "checksum mismatch"},
		{"checksum changed", func() []byte { d := bytes.Clone(valid); d[len(d)-1] ^= 1; return d }(), "checksum mismatch"},
		{"record total changed", func() []byte { d := bytes.Clone(valid); d[1]++; return d }(), "checksum mismatch"},
		// With a valid checksum (a bug, not a corruption), the body checks still hold.
		{"sealed trailing bytes", sealed(append(bytes.Clone(body), 0)), "1 trailing bytes"},
		{"sealed record total", func() []byte { d := bytes.Clone(body); d[1]++; return sealed(d) }(), "entries hold 2 records, the request 3"},
		{"sealed truncated body", sealed(body[:len(body)-1]), "truncated"},
		{"sealed huge entry count", sealed(binary.AppendUvarint([]byte{countsEncodingVersion, 0, 0}, 1<<40)), "truncated"},
		{"sealed unknown flags", func() []byte { d := bytes.Clone(body); d[4] = 0x80; return sealed(d) }(), "unknown entry flags"},
		{"pair index out of range", func() []byte {
			r := testRequest(t, []logRecord{{"view", "u1", tsRecord}})
			r.entries[0].counts[0].pair = 5
			d, marshalErr := countsEncoding{}.Marshal(t.Context(), r)
			require.NoError(t, marshalErr)
			return d
		}(), "pair 5 of 1"},
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

// TestCountsEncodingRejectsEveryFlippedByte changes each byte of an item in
// turn, in several ways: every change is refused, by the checksum unless it
// is the version byte's.
func TestCountsEncodingRejectsEveryFlippedByte(t *testing.T) {
	t.Parallel()
	valid, err := countsEncoding{}.Marshal(t.Context(), testRequest(t,
		[]logRecord{{"view", "u1", tsRecord}, {"", "", tsRecord}, {"view", "u2", tsRecord.Add(time.Hour)}},
		[]logRecord{{"a:b", "", tsRecord}}))
	require.NoError(t, err)
	for _, mask := range []byte{0x01, 0x02, 0x10, 0x80, 0xff} {
		for i := range valid {
			d := bytes.Clone(valid)
			d[i] ^= mask
			_, req, decodeErr := countsEncoding{}.Unmarshal(d)
			require.ErrorIs(t, decodeErr, errCorruptRequest, "byte %d ^ %#x", i, mask)
			require.Nil(t, req)
			switch {
			case i > 0:
				require.ErrorIs(t, decodeErr, errChecksum, "byte %d ^ %#x", i, mask)
			default:
				require.ErrorContains(t, decodeErr, "unknown version")
			}
		}
	}
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
	seed(detailsRequest())
	f.Add(sealed([]byte{countsEncodingVersion, 0, 1}))
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

// FuzzCountsEncodingFlippedByte encodes a random request and changes one
// byte of the item: the item is refused.
func FuzzCountsEncodingFlippedByte(f *testing.F) {
	f.Add(uint64(1), uint16(3), uint32(0), byte(1))
	f.Add(uint64(2), uint16(40), uint32(17), byte(0x80))
	f.Add(uint64(3), uint16(0), uint32(5), byte(0xff))
	f.Add(uint64(4), uint16(500), uint32(1<<20), byte(0x41))
	f.Fuzz(func(t *testing.T, seed uint64, n uint16, pos uint32, mask byte) {
		if mask == 0 {
			return
		}
		rng := rand.New(rand.NewPCG(seed, 11))
		records := make([]logRecord, n%600)
		for i := range records {
			typ := []string{"", "view", "buy:now"}[rng.IntN(3)]
			records[i] = logRecord{typ, "u" + strconv.Itoa(rng.IntN(9)), tsRecord.Add(time.Duration(rng.IntN(30)) * time.Hour)}
		}
		req := testRequest(t, records, records[:len(records)/2])
		if len(req.entries) > 0 && rng.IntN(2) == 0 {
			req.entries[0].excluded = true
		}
		data, err := countsEncoding{}.Marshal(t.Context(), req)
		require.NoError(t, err)
		i := int(pos % uint32(len(data))) //nolint:gosec // below len(data)
		data[i] ^= mask
		_, got, err := countsEncoding{}.Unmarshal(data)
		require.ErrorIs(t, err, errCorruptRequest, "byte %d of %d ^ %#x", i, len(data), mask)
		require.Nil(t, got)
	})
}

// BenchmarkCountsEncoding measures what a persistent sending queue adds per
// request: Marshal when the request is queued, Unmarshal when it is read
// back (the batch of BenchmarkAggregate, converted).
func BenchmarkCountsEncoding(b *testing.B) {
	m := newMapper(createDefaultConfig().(*Config))
	for _, users := range []int{100, 10_000} {
		req := newConverter().logs(realisticLogs(users), &m, tsNow.UnixNano())
		data, err := countsEncoding{}.Marshal(b.Context(), req)
		require.NoError(b, err)
		b.Run("marshal/users="+strconv.Itoa(users), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := (countsEncoding{}).Marshal(b.Context(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("unmarshal/users="+strconv.Itoa(users), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, _, err := (countsEncoding{}).Unmarshal(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// detailsRequest is a converted request with property counts, sums, value
// drops and records outside the time horizon.
func detailsRequest() *countsRequest {
	cfg := createDefaultConfig().(*Config)
	cfg.Properties = []PropertyConfig{{Attribute: "model"}, {Attribute: "plan", Default: "free"}}
	cfg.Sums = []SumConfig{{Attribute: "tokens"}}
	m := newMapper(cfg)
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for i, at := range []time.Time{tsRecord, tsRecord.Add(time.Hour), tsRecord.Add(-30 * 24 * time.Hour), tsRecord.Add(30 * 24 * time.Hour)} {
		lr := lrs.AppendEmpty()
		lr.SetEventName("gen")
		lr.SetTimestamp(pcommon.NewTimestampFromTime(at))
		lr.Attributes().PutStr("model", "m:"+strconv.Itoa(i%2))
		lr.Attributes().PutInt("tokens", int64(-7+100*i))
	}
	lr := lrs.AppendEmpty()
	lr.SetEventName("gen")
	lr.SetTimestamp(pcommon.NewTimestampFromTime(tsRecord))
	lr.Attributes().PutStr("tokens", "not a number")
	return newConverter().logs(ld, &m, tsRecord.UnixNano())
}
