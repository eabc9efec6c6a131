package redisanalyticsexporter

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
)

// testRequest converts records grouped in resource entries (see newLogs),
// as the exporter's converter does.
// testRequest converts groups of records, each record with its own
// log.record.uid (one fingerprinted entry per group).
func testRequest(t testing.TB, groups ...[]logRecord) *countsRequest {
	t.Helper()
	m := newMapper(createDefaultConfig().(*Config))
	ld := newLogs(groups...)
	setRecordIDs(ld, t.Name())
	return newConverter().logs(ld, &m, tsNow.UnixNano())
}

// typeUserHour is a (type, user) pair in one hour.
type typeUserHour struct {
	pairKey
	hour int64
}

// requestTotals sums a request's events per (type, user, hour) and its
// unmapped records.
func requestTotals(reqs ...*countsRequest) (map[typeUserHour]int64, int64) {
	events := map[typeUserHour]int64{}
	var missing int64
	for _, r := range reqs {
		for _, en := range r.entries {
			missing += en.missing
			for _, c := range en.counts {
				events[typeUserHour{en.pairs[c.pair], c.hour}] += c.n
			}
		}
	}
	return events, missing
}

func manyRecords(n, users int, typ string) []logRecord {
	out := make([]logRecord, n)
	for i := range out {
		out[i] = logRecord{typ, "u" + strconv.Itoa(i%users), tsRecord.Add(time.Duration(i%3) * time.Hour)}
	}
	return out
}

func TestConvertCountsPerEntry(t *testing.T) {
	t.Parallel()
	m := newMapper(createDefaultConfig().(*Config))
	req := newConverter().logs(newLogs(
		[]logRecord{{"view", "u1", tsRecord}, {"view", "u1", tsRecord}, {"", "", tsRecord}},
		[]logRecord{{"buy", "", tsRecord}}), &m, tsNow.UnixNano())
	assert.Equal(t, 4, req.ItemsCount())
	require.Len(t, req.entries, 2)
	first := req.entries[0]
	assert.Equal(t, int64(3), first.records)
	assert.Equal(t, int64(1), first.missing)
	assert.False(t, first.fingerprinted, "no identities")
	require.Len(t, first.counts, 1)
	require.Len(t, first.pairs, 1)
	c := first.counts[0]
	assert.Equal(t, pairKey{typ: "view", user: userRef{str: "u1", kind: userStr}}, first.pairs[c.pair])
	assert.Equal(t, int64(2), c.n)
	assert.Equal(t, int64(1), req.entries[1].records)
	assert.Positive(t, req.BytesSize())
}

// TestConvertSplitsIdentifiedRecords: a resource entry with identified and
// anonymous records becomes two entries, only the first fingerprinted.
func TestConvertSplitsIdentifiedRecords(t *testing.T) {
	t.Parallel()
	ld := dedupLogs("view", 3)
	lrs := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
	lrs.AppendEmpty().SetEventName("anon")
	lrs.AppendEmpty().Attributes().PutStr("log.record.uid", "no event type")
	e := &redisAnalyticsExporter{cfg: createDefaultConfig().(*Config), now: func() time.Time { return tsNow }}
	e.mapper = newMapper(e.cfg)
	e.converters.New = func() any { return newConverter() }
	r, err := e.convertLogs(t.Context(), ld)
	require.NoError(t, err)
	req := r.(*countsRequest)
	assert.Equal(t, 5, req.ItemsCount())
	require.Len(t, req.entries, 2)
	assert.True(t, req.entries[0].fingerprinted)
	assert.Equal(t, int64(3), req.entries[0].records)
	assert.Zero(t, req.entries[0].missing)
	assert.False(t, req.entries[1].fingerprinted)
	assert.Equal(t, int64(2), req.entries[1].records)
	assert.Equal(t, int64(1), req.entries[1].missing)
}

func TestMergeSplit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		maxSize int
		sizer   exporterhelper.RequestSizerType
		// wantSizes are the sizes of the requests returned (under sizer).
		wantSizes []int
		// wantWhole: no entry was cut, every fingerprint is kept.
		wantWhole bool
	}{
		{name: "merge only", maxSize: 0, sizer: exporterhelper.RequestSizerTypeItems, wantSizes: []int{1030}, wantWhole: true},
		{name: "fits", maxSize: 2000, sizer: exporterhelper.RequestSizerTypeItems, wantSizes: []int{1030}, wantWhole: true},
		{name: "items split", maxSize: 300, sizer: exporterhelper.RequestSizerTypeItems, wantSizes: []int{300, 300, 300, 130}},
		{name: "one item each", maxSize: 1, sizer: exporterhelper.RequestSizerTypeItems},
		{name: "requests sizer never splits", maxSize: 1, sizer: exporterhelper.RequestSizerTypeRequests, wantSizes: []int{1030}, wantWhole: true},
		{name: "bytes split", maxSize: 2000, sizer: exporterhelper.RequestSizerTypeBytes},
		{name: "bytes smaller than a count", maxSize: 5, sizer: exporterhelper.RequestSizerTypeBytes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := testRequest(t, manyRecords(500, 40, "view"), []logRecord{{"", "", tsRecord}, {"", "", tsRecord}})
			b := testRequest(t, manyRecords(528, 7, "buy"))
			wantEvents, wantMissing := requestTotals(a, b)
			wantBytes := a.BytesSize() + b.BytesSize()

			out, err := a.MergeSplit(t.Context(), tt.maxSize, tt.sizer, b)
			require.NoError(t, err)
			require.NotEmpty(t, out)
			parts := make([]*countsRequest, len(out))
			records := 0
			for i, r := range out {
				parts[i] = r.(*countsRequest)
				records += r.ItemsCount()
			}
			assert.Equal(t, 1030, records, "every record is in exactly one request")
			gotEvents, gotMissing := requestTotals(parts...)
			assert.Equal(t, wantEvents, gotEvents)
			assert.Equal(t, wantMissing, gotMissing)

			size := func(r *countsRequest) int {
				if tt.sizer == exporterhelper.RequestSizerTypeBytes {
					return r.BytesSize()
				}
				return r.ItemsCount()
			}
			if tt.wantSizes != nil {
				got := make([]int, len(parts))
				for i, p := range parts {
					got[i] = size(p)
				}
				assert.Equal(t, tt.wantSizes, got)
			}
			whole := true
			for i, p := range parts {
				var entryRecords int64
				for _, en := range p.entries {
					entryRecords += en.records
					if !en.fingerprinted && len(en.counts) > 0 {
						whole = false
					}
				}
				assert.Equal(t, int64(p.records), entryRecords, "request %d", i)
				if tt.maxSize > 0 && tt.sizer != exporterhelper.RequestSizerTypeRequests && size(p) > tt.maxSize {
					// Only a single count bigger than maxSize bytes may exceed it.
					require.Equal(t, exporterhelper.RequestSizerTypeBytes, tt.sizer)
					counts := 0
					for _, en := range p.entries {
						counts += len(en.counts)
					}
					require.Equal(t, 1, counts)
				}
				if i < len(parts)-1 && tt.sizer == exporterhelper.RequestSizerTypeItems && size(p) < tt.maxSize {
					// A request closes early only for a whole entry that did
					// not fit the room left: it starts the next request.
					next := parts[i+1].entries[0]
					assert.Greater(t, size(p)+int(next.records), tt.maxSize, "request %d closed early", i)
					assert.LessOrEqual(t, int(next.records), tt.maxSize, "request %d closed early", i)
				}
			}
			if tt.wantWhole {
				assert.True(t, whole)
				assert.Equal(t, wantBytes, parts[0].BytesSize())
			}
		})
	}
}

// entriesRequest builds one resource entry per size, each of that many
// records of its own event type, three users and two hours.
func entriesRequest(t testing.TB, sizes ...int) *countsRequest {
	t.Helper()
	groups := make([][]logRecord, len(sizes))
	for i, n := range sizes {
		groups[i] = manyRecords(n, 3, "type-"+strconv.Itoa(i))
	}
	return testRequest(t, groups...)
}

// wholeEntries counts the entries of reqs that kept their fingerprint, by
// fingerprint: an entry the split did not cut.
func wholeEntries(reqs ...*countsRequest) map[resFP]int {
	whole := map[resFP]int{}
	for _, r := range reqs {
		for _, en := range r.entries {
			if en.fingerprinted {
				whole[en.fp]++
			}
		}
	}
	return whole
}

// TestMergeSplitKeepsEntriesThatFit: an entry no larger than max_size is
// never cut (it starts a new request when the current one has too little
// room left), so it keeps its fingerprint; only larger entries are cut.
func TestMergeSplitKeepsEntriesThatFit(t *testing.T) {
	t.Parallel()
	bytesOf := func(sizes ...int) []int {
		out := make([]int, len(sizes))
		for i, en := range entriesRequest(t, sizes...).entries {
			out[i] = int(en.bytesSize())
		}
		return out
	}
	eb := bytesOf(200, 200, 200) // three entries of about the same byte size
	tests := []struct {
		name    string
		entries []int // records per entry
		maxSize int
		sizer   exporterhelper.RequestSizerType
		// wantSizes are the sizes of the requests returned (under sizer).
		wantSizes []int
		// wantCut lists the entries larger than maxSize, which alone are cut.
		wantCut []int
	}{
		{name: "each entry in its own request", entries: []int{200, 200, 200}, maxSize: 300, sizer: exporterhelper.RequestSizerTypeItems, wantSizes: []int{200, 200, 200}},
		{name: "entries share a request while they fit", entries: []int{100, 200, 250, 40}, maxSize: 300, sizer: exporterhelper.RequestSizerTypeItems, wantSizes: []int{300, 290}},
		{name: "an entry of exactly max_size", entries: []int{10, 300, 1}, maxSize: 300, sizer: exporterhelper.RequestSizerTypeItems, wantSizes: []int{10, 300, 1}},
		{name: "only the larger entry is cut", entries: []int{100, 700, 50, 260}, maxSize: 300, sizer: exporterhelper.RequestSizerTypeItems, wantSizes: []int{300, 300, 250, 260}, wantCut: []int{1}},
		{name: "bytes: each entry in its own request", entries: []int{200, 200, 200}, maxSize: eb[0] + eb[1]/2, sizer: exporterhelper.RequestSizerTypeBytes, wantSizes: eb},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := entriesRequest(t, tt.entries...)
			for _, en := range in.entries {
				require.True(t, en.fingerprinted)
			}
			wantEvents, wantMissing := requestTotals(in)
			wantWhole := wholeEntries(in)
			for _, i := range tt.wantCut {
				delete(wantWhole, in.entries[i].fp)
			}
			out, err := in.MergeSplit(t.Context(), tt.maxSize, tt.sizer, nil)
			require.NoError(t, err)
			parts := make([]*countsRequest, len(out))
			sizes := make([]int, len(out))
			for i, r := range out {
				parts[i] = r.(*countsRequest)
				sizes[i] = r.ItemsCount()
				if tt.sizer == exporterhelper.RequestSizerTypeBytes {
					sizes[i] = r.BytesSize()
				}
				assert.LessOrEqual(t, sizes[i], tt.maxSize)
			}
			assert.Equal(t, tt.wantSizes, sizes)
			assert.Equal(t, wantWhole, wholeEntries(parts...), "entries that fit kept whole, with their fingerprint")
			gotEvents, gotMissing := requestTotals(parts...)
			assert.Equal(t, wantEvents, gotEvents)
			assert.Equal(t, wantMissing, gotMissing)
		})
	}
}

func TestMergeSplitKeepsExclusion(t *testing.T) {
	t.Parallel()
	r := testRequest(t, manyRecords(10, 3, "view"))
	r.entries[0].excluded = true
	out, err := r.MergeSplit(t.Context(), 4, exporterhelper.RequestSizerTypeItems, nil)
	require.NoError(t, err)
	require.Len(t, out, 3)
	for _, o := range out {
		for _, en := range o.(*countsRequest).entries {
			assert.True(t, en.excluded)
			assert.False(t, en.fingerprinted, "a cut entry has no fingerprint")
		}
	}
}

func TestMergeSplitRejectsOtherTypes(t *testing.T) {
	t.Parallel()
	r := testRequest(t, manyRecords(2, 1, "view"))
	_, err := r.MergeSplit(t.Context(), 0, exporterhelper.RequestSizerTypeItems, otherRequest{})
	require.ErrorIs(t, err, errMergeType)
	assert.Equal(t, 2, r.ItemsCount(), "unchanged")
}

type otherRequest struct{ xexporterhelper.Request }

// FuzzMergeSplit merges two random requests and splits them at a random
// size: no record is lost or invented, no request exceeds the size.
func FuzzMergeSplit(f *testing.F) {
	f.Add(uint64(1), uint16(100), uint16(50), uint16(7), false)
	f.Add(uint64(2), uint16(1), uint16(1), uint16(1), true)
	f.Add(uint64(3), uint16(900), uint16(0), uint16(333), true)
	f.Fuzz(func(t *testing.T, seed uint64, na, nb, maxSize uint16, bytes bool) {
		rng := rand.New(rand.NewPCG(seed, 7))
		gen := func(n int) *countsRequest {
			var groups [][]logRecord
			for n > 0 {
				k := 1 + rng.IntN(n)
				g := make([]logRecord, k)
				for i := range g {
					typ := []string{"", "view", "buy"}[rng.IntN(3)]
					g[i] = logRecord{typ, "u" + strconv.Itoa(rng.IntN(5)), tsRecord.Add(time.Duration(rng.IntN(40)) * time.Hour)}
				}
				groups = append(groups, g)
				n -= k
			}
			return testRequest(t, groups...)
		}
		a, b := gen(int(na%2000)), gen(int(nb%2000))
		wantEvents, wantMissing := requestTotals(a, b)
		want := a.ItemsCount() + b.ItemsCount()
		sizer := exporterhelper.RequestSizerTypeItems
		if bytes {
			sizer = exporterhelper.RequestSizerTypeBytes
		}
		// Every entry that fits max_size on its own comes out whole, with its
		// fingerprint; no piece of a cut entry has one.
		wantWhole := map[resFP]int{}
		s := splitter{max: int64(maxSize), itemsSizer: !bytes}
		for _, r := range []*countsRequest{a, b} {
			for i := range r.entries {
				if en := &r.entries[i]; en.fingerprinted && (maxSize == 0 || s.entrySize(en) <= s.max) {
					wantWhole[en.fp]++
				}
			}
		}
		out, err := a.MergeSplit(t.Context(), int(maxSize), sizer, b)
		require.NoError(t, err)
		require.NotEmpty(t, out)
		parts := make([]*countsRequest, len(out))
		got := 0
		for i, r := range out {
			parts[i] = r.(*countsRequest)
			got += r.ItemsCount()
			if maxSize > 0 && !bytes {
				require.LessOrEqual(t, r.ItemsCount(), int(maxSize))
			}
		}
		require.Equal(t, want, got)
		gotEvents, gotMissing := requestTotals(parts...)
		require.Equal(t, wantEvents, gotEvents)
		require.Equal(t, wantMissing, gotMissing)
		require.Equal(t, wantWhole, wholeEntries(parts...), "entries that fit max_size are not cut")
	})
}
