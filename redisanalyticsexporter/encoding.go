package redisanalyticsexporter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
)

// countsEncoding stores countsRequests in a persistent sending queue
// (sending_queue::storage). The format is versioned; all integers are
// varints:
//
//	version=5, body, CRC-32C (Castagnoli) of the version and the body
//	  (4 bytes, little endian).
//	body: records (events), items (log records or spans), number of
//	  entries, then per entry:
//	  flags (1: fingerprinted, 2: excluded), fingerprint hi and lo (8 bytes
//	  each, little endian), records, missing, too old, in future, number of
//	  pairs, then per pair: type (length, bytes), user kind (0 none, 1
//	  string, 2 int), the user (length and bytes, or a signed varint);
//	  number of counts, then per count: pair index, hour (signed), n;
//	  the value drops by reason (3); number of property counts, then per
//	  count: type, property, value (each length, bytes), hour (signed), n;
//	  number of sums, then per sum: type, attribute, hour (signed), sum
//	  (signed), number of values.
//
// Versions 1 to 4 were never released and are not read. The fingerprint is
// the identity fingerprint of dedup.go.
//
// Unmarshal checks the checksum, then every length and sum against the
// input, so a corrupt or truncated queue item is an error, never a panic.
// The checksum catches every change of up to 32 consecutive bits (any one
// corrupt byte) and all but one in 2^32 of other corruptions, which could
// otherwise decode to well-formed but wrong counts.
type countsEncoding struct{}

const (
	countsEncodingVersion = 5
	checksumBytes         = 4
)

// castagnoli is the CRC-32C table; crc32 uses the CPU's CRC32 instruction
// where there is one.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	flagFingerprinted = 1 << iota
	flagExcluded
)

var errCorruptRequest = errors.New("redis_analytics: corrupt queued request")

func (countsEncoding) Marshal(_ context.Context, r xexporterhelper.Request) ([]byte, error) {
	req, ok := r.(*countsRequest)
	if !ok {
		return nil, fmt.Errorf("redis_analytics: cannot encode a request of type %T", r)
	}
	buf := make([]byte, 0, req.bytes+16+checksumBytes)
	buf = append(buf, countsEncodingVersion)
	buf = binary.AppendUvarint(buf, uint64(req.records)) //nolint:gosec // a count, never negative
	buf = binary.AppendUvarint(buf, uint64(req.items))   //nolint:gosec // a count, never negative
	buf = binary.AppendUvarint(buf, uint64(len(req.entries)))
	for i := range req.entries {
		en := &req.entries[i]
		var flags byte
		if en.fingerprinted {
			flags |= flagFingerprinted
		}
		if en.excluded {
			flags |= flagExcluded
		}
		buf = append(buf, flags)
		buf = binary.LittleEndian.AppendUint64(buf, en.fp.hi)
		buf = binary.LittleEndian.AppendUint64(buf, en.fp.lo)
		buf = binary.AppendUvarint(buf, uint64(en.records))  //nolint:gosec // a count, never negative
		buf = binary.AppendUvarint(buf, uint64(en.missing))  //nolint:gosec // a count, never negative
		buf = binary.AppendUvarint(buf, uint64(en.tooOld))   //nolint:gosec // a count, never negative
		buf = binary.AppendUvarint(buf, uint64(en.inFuture)) //nolint:gosec // a count, never negative
		buf = binary.AppendUvarint(buf, uint64(len(en.pairs)))
		for j := range en.pairs {
			k := &en.pairs[j]
			buf = appendString(buf, k.typ)
			buf = append(buf, byte(k.user.kind))
			switch k.user.kind {
			case userStr:
				buf = appendString(buf, k.user.str)
			case userInt:
				buf = binary.AppendVarint(buf, k.user.num)
			default:
			}
		}
		buf = binary.AppendUvarint(buf, uint64(len(en.counts)))
		for _, c := range en.counts {
			buf = binary.AppendUvarint(buf, uint64(c.pair)) //nolint:gosec // an index, never negative
			buf = binary.AppendVarint(buf, c.hour)
			buf = binary.AppendUvarint(buf, uint64(c.n)) //nolint:gosec // a count, never negative
		}
		buf = appendDetails(buf, en)
	}
	return binary.LittleEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli)), nil
}

// appendDetails appends an entry's value drops, property counts and sums.
func appendDetails(buf []byte, en *entryCounts) []byte {
	for _, n := range en.valueDrops {
		buf = binary.AppendUvarint(buf, uint64(n)) //nolint:gosec // a count, never negative
	}
	buf = binary.AppendUvarint(buf, uint64(len(en.props)))
	for i := range en.props {
		p := &en.props[i]
		buf = appendString(buf, p.typ)
		buf = appendString(buf, p.prop)
		buf = appendString(buf, p.value)
		buf = binary.AppendVarint(buf, p.hour)
		buf = binary.AppendUvarint(buf, uint64(p.n)) //nolint:gosec // a count, never negative
	}
	buf = binary.AppendUvarint(buf, uint64(len(en.sums)))
	for i := range en.sums {
		s := &en.sums[i]
		buf = appendString(buf, s.typ)
		buf = appendString(buf, s.attr)
		buf = binary.AppendVarint(buf, s.hour)
		buf = binary.AppendVarint(buf, s.sum)
		buf = binary.AppendUvarint(buf, uint64(s.n)) //nolint:gosec // a count, never negative
	}
	return buf
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func (countsEncoding) Unmarshal(data []byte) (context.Context, xexporterhelper.Request, error) {
	d := decoder{data: data}
	req, err := d.request()
	if err != nil {
		return context.Background(), nil, fmt.Errorf("%w: %w", errCorruptRequest, err)
	}
	return context.Background(), req, nil
}

// decoder reads the countsEncoding format.
type decoder struct {
	data []byte
	pos  int
}

var (
	errTruncated = errors.New("truncated")
	errRange     = errors.New("value out of range")
	errChecksum  = errors.New("checksum mismatch")
)

func (d *decoder) request() (*countsRequest, error) {
	version, err := d.byte()
	if err != nil {
		return nil, err
	}
	switch version {
	case countsEncodingVersion:
		// Check the checksum before reading anything, then read the body.
		body := len(d.data) - checksumBytes
		if body < d.pos {
			return nil, errTruncated
		}
		stored := binary.LittleEndian.Uint32(d.data[body:])
		if sum := crc32.Checksum(d.data[:body], castagnoli); sum != stored {
			return nil, fmt.Errorf("%w: computed %#08x, stored %#08x", errChecksum, sum, stored)
		}
		d.data = d.data[:body]
	default:
		return nil, fmt.Errorf("unknown version %d", version)
	}
	records, err := d.count()
	if err != nil {
		return nil, err
	}
	items, err := d.count()
	if err != nil {
		return nil, err
	}
	// Each entry takes at least 20 bytes: bounding the count by the input
	// keeps a corrupt length from allocating gigabytes.
	numEntries, err := d.length(20)
	if err != nil {
		return nil, err
	}
	req := &countsRequest{entries: make([]entryCounts, 0, numEntries), items: int(items)}
	var sum int64
	for range numEntries {
		en, err := d.entry()
		if err != nil {
			return nil, err
		}
		sum += en.records
		if sum > records {
			return nil, errors.New("entries hold more records than the request")
		}
		req.addEntry(en)
	}
	if sum != records {
		return nil, fmt.Errorf("entries hold %d records, the request %d", sum, records)
	}
	if d.pos != len(d.data) {
		return nil, fmt.Errorf("%d trailing bytes", len(d.data)-d.pos)
	}
	return req, nil
}

func (d *decoder) entry() (entryCounts, error) {
	var en entryCounts
	flags, err := d.byte()
	if err != nil {
		return en, err
	}
	if flags&^(flagFingerprinted|flagExcluded) != 0 {
		return en, fmt.Errorf("unknown entry flags %#x", flags)
	}
	en.fingerprinted, en.excluded = flags&flagFingerprinted != 0, flags&flagExcluded != 0
	if len(d.data)-d.pos < 16 {
		return en, errTruncated
	}
	en.fp.hi = binary.LittleEndian.Uint64(d.data[d.pos:])
	en.fp.lo = binary.LittleEndian.Uint64(d.data[d.pos+8:])
	d.pos += 16
	if en.records, err = d.count(); err != nil {
		return en, err
	}
	if en.missing, err = d.count(); err != nil {
		return en, err
	}
	if en.tooOld, err = d.count(); err != nil {
		return en, err
	}
	if en.inFuture, err = d.count(); err != nil {
		return en, err
	}
	// Each pair takes at least 2 bytes, each count 3.
	numPairs, err := d.length(2)
	if err != nil {
		return en, err
	}
	if numPairs > 0 {
		en.pairs = make([]pairKey, 0, numPairs)
	}
	for range numPairs {
		k, pairErr := d.pair()
		if pairErr != nil {
			return en, pairErr
		}
		en.pairs = append(en.pairs, k)
	}
	numCounts, err := d.length(3)
	if err != nil {
		return en, err
	}
	if numCounts > 0 {
		en.counts = make([]eventCount, 0, numCounts)
	}
	mapped := en.unmapped()
	if mapped > en.records {
		return en, errors.New("unmapped records exceed the entry's records")
	}
	for range numCounts {
		c, err := d.eventCount(numPairs)
		if err != nil {
			return en, err
		}
		if mapped += c.n; mapped > en.records {
			return en, errors.New("counts exceed the entry's records")
		}
		en.counts = append(en.counts, c)
	}
	if mapped != en.records {
		return en, fmt.Errorf("entry counts %d of its %d records", mapped, en.records)
	}
	if err := d.details(&en); err != nil {
		return en, err
	}
	return en, nil
}

// details reads an entry's value drops, property counts and sums.
func (d *decoder) details(en *entryCounts) error {
	var err error
	for i := range en.valueDrops {
		if en.valueDrops[i], err = d.count(); err != nil {
			return err
		}
	}
	// A property count takes at least 5 bytes, a sum 5.
	numProps, err := d.length(5)
	if err != nil {
		return err
	}
	if numProps > 0 {
		en.props = make([]propCount, 0, numProps)
	}
	for range numProps {
		var p propCount
		if p.typ, err = d.string(); err != nil {
			return err
		}
		if p.prop, err = d.string(); err != nil {
			return err
		}
		if p.value, err = d.string(); err != nil {
			return err
		}
		if p.hour, err = d.varint(); err != nil {
			return err
		}
		if p.n, err = d.count(); err != nil {
			return err
		}
		if p.n == 0 {
			return errors.New("empty property count")
		}
		en.props = append(en.props, p)
	}
	numSums, err := d.length(5)
	if err != nil {
		return err
	}
	if numSums > 0 {
		en.sums = make([]sumCount, 0, numSums)
	}
	for range numSums {
		var s sumCount
		if s.typ, err = d.string(); err != nil {
			return err
		}
		if s.attr, err = d.string(); err != nil {
			return err
		}
		if s.hour, err = d.varint(); err != nil {
			return err
		}
		if s.sum, err = d.varint(); err != nil {
			return err
		}
		if s.n, err = d.count(); err != nil {
			return err
		}
		if s.n == 0 {
			return errors.New("empty sum")
		}
		en.sums = append(en.sums, s)
	}
	return nil
}

func (d *decoder) pair() (pairKey, error) {
	var k pairKey
	var err error
	if k.typ, err = d.string(); err != nil {
		return k, err
	}
	kind, err := d.byte()
	if err != nil {
		return k, err
	}
	k.user.kind = userKind(kind)
	switch k.user.kind {
	case userNone:
	case userStr:
		if k.user.str, err = d.string(); err != nil {
			return k, err
		}
	case userInt:
		if k.user.num, err = d.varint(); err != nil {
			return k, err
		}
	default:
		return k, fmt.Errorf("unknown user kind %d", kind)
	}
	return k, nil
}

// eventCount reads a count of an entry with numPairs pairs.
func (d *decoder) eventCount(numPairs int) (eventCount, error) {
	var c eventCount
	pair, err := d.uvarint()
	if err != nil {
		return c, err
	}
	if pair >= uint64(numPairs) { //nolint:gosec // a length, never negative
		return c, fmt.Errorf("pair %d of %d", pair, numPairs)
	}
	c.pair = int32(pair) //nolint:gosec // below numPairs, itself bounded by the input length
	if c.hour, err = d.varint(); err != nil {
		return c, err
	}
	if c.n, err = d.count(); err != nil {
		return c, err
	}
	if c.n == 0 {
		return c, errors.New("empty count")
	}
	return c, nil
}

func (d *decoder) byte() (byte, error) {
	if d.pos >= len(d.data) {
		return 0, errTruncated
	}
	b := d.data[d.pos]
	d.pos++
	return b, nil
}

func (d *decoder) uvarint() (uint64, error) {
	v, n := binary.Uvarint(d.data[d.pos:])
	if n <= 0 {
		return 0, errTruncated
	}
	d.pos += n
	return v, nil
}

func (d *decoder) varint() (int64, error) {
	v, n := binary.Varint(d.data[d.pos:])
	if n <= 0 {
		return 0, errTruncated
	}
	d.pos += n
	return v, nil
}

// count reads a non-negative int64 that also fits an int.
func (d *decoder) count() (int64, error) {
	v, err := d.uvarint()
	if err != nil {
		return 0, err
	}
	if v > math.MaxInt32 {
		return 0, errRange
	}
	return int64(v), nil
}

// length reads a number of items of at least minBytes each, checked against
// the bytes left.
func (d *decoder) length(minBytes int) (int, error) {
	v, err := d.uvarint()
	if err != nil {
		return 0, err
	}
	if v > uint64((len(d.data)-d.pos)/minBytes) { //nolint:gosec // both non-negative
		return 0, errTruncated
	}
	return int(v), nil //nolint:gosec // bounded by the input length
}

func (d *decoder) string() (string, error) {
	n, err := d.length(1)
	if err != nil {
		return "", err
	}
	s := string(d.data[d.pos : d.pos+n])
	d.pos += n
	return s, nil
}
