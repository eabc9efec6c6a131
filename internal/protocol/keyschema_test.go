package protocol

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mustSchema(t testing.TB, prefix string) Schema {
	t.Helper()
	s, err := New(prefix)
	require.NoError(t, err)
	return s
}

func TestKeyLayout(t *testing.T) {
	t.Parallel()
	s := mustSchema(t, DefaultPrefix)
	hour := HourOf(time.Date(2024, 3, 9, 14, 59, 59, 0, time.UTC))
	day := hour - hour%24
	tests := []struct {
		name string
		c    Counter
		want string
	}{
		{"daily", Counter{Family: Daily, EventType: "page_view", Hour: day}, "analytics:counter:page_view:2024-03-09"},
		{"hourly", Counter{Family: Hourly, EventType: "page_view", Hour: hour}, "analytics:counter:page_view:2024-03-09:14"},
		{"user", Counter{Family: UserDaily, EventType: "signup", UserID: "u1", Hour: day}, "analytics:user:u1:signup:2024-03-09"},
		{"separator escaped", Counter{Family: UserDaily, EventType: "a:b", UserID: "x:y", Hour: day}, "analytics:user:x%3Ay:a%3Ab:2024-03-09"},
		{"hash tag escaped", Counter{Family: Daily, EventType: "{slot}", Hour: day}, "analytics:counter:%7Bslot%7D:2024-03-09"},
		{"unicode kept", Counter{Family: Daily, EventType: "vue_page_été", Hour: day}, "analytics:counter:vue_page_été:2024-03-09"},
		{"epoch", Counter{Family: Hourly, EventType: "t", Hour: 0}, "analytics:counter:t:1970-01-01:00"},
		{"before epoch", Counter{Family: Hourly, EventType: "t", Hour: -1}, "analytics:counter:t:1969-12-31:23"},
		{"year 9999", Counter{Family: Daily, EventType: "t", Hour: maxHour - 23}, "analytics:counter:t:9999-12-31"},
		{"property daily", Counter{Family: PropertyDaily, EventType: "gen", Attribute: "model", Value: "gpt-4", Hour: day}, "analytics:prop:gen:model:gpt-4:2024-03-09"},
		{"property hourly", Counter{Family: PropertyHourly, EventType: "gen", Attribute: "model", Value: "gpt-4", Hour: hour}, "analytics:prop:gen:model:gpt-4:2024-03-09:14"},
		{"property escaped", Counter{Family: PropertyDaily, EventType: "a:b", Attribute: "url.path", Value: "/a:b c", Hour: day}, "analytics:prop:a%3Ab:url.path:/a%3Ab%20c:2024-03-09"},
		{"sum daily", Counter{Family: SumDaily, EventType: "gen", Attribute: "gen_ai.usage.output_tokens", Hour: day}, "analytics:sum:gen:gen_ai.usage.output_tokens:2024-03-09"},
		{"sum hourly", Counter{Family: SumHourly, EventType: "gen", Attribute: "tokens", Hour: hour}, "analytics:sum:gen:tokens:2024-03-09:14"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := s.Key(tt.c)
			assert.Equal(t, tt.want, key)
			got, err := s.Parse(key)
			require.NoError(t, err)
			assert.Equal(t, tt.c, got)
		})
	}
}

func TestHelperKeys(t *testing.T) {
	t.Parallel()
	s := mustSchema(t, "{app}")
	assert.Equal(t, "{app}:pending", s.PendingKey())
	assert.Equal(t, "{app}:staging", s.StagingIndexKey())
	assert.Equal(t, "{app}:staging:f1", s.StagingKey("f1"))
	assert.Equal(t, "{app}:batch:b1", s.BatchKey("b1"))
	assert.Equal(t, "{app}:res:00ff", s.ResourceKey("00ff"))
	assert.Equal(t, "{app}:staging-claim:f1", s.StagingClaimKey("f1"))
	assert.Equal(t, "{app}:quarantine", s.QuarantineKey())
	assert.Equal(t, "{app}", s.Prefix())
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	s := mustSchema(t, DefaultPrefix)
	for _, key := range []string{
		"other:counter:a:2024-01-01",
		"analytics:counter:a",
		"analytics:counter::2024-01-01",
		"analytics:counter:a:2024-02-30",
		"analytics:counter:a:2024-1-01",
		"analytics:counter:a:2024-01-01:24",
		"analytics:counter:a:2024-01-01:7",
		"analytics:counter:a:2024-01-01:07:00",
		"analytics:counter:a%3a:2024-01-01",
		"analytics:counter:a%3:2024-01-01",
		"analytics:counter:a%:2024-01-01",
		"analytics:counter:a b:2024-01-01",
		"analytics:counter:%41:2024-01-01",           // "A", which Escape leaves raw
		"analytics:counter:page%5Fview:2024-01-01",   // "_"
		"analytics:counter:%C3%A9t%C3%A9:2024-01-01", // UTF-8 stays raw
		"analytics:user:%41:a:2024-01-01",
		"analytics:user:u:%7E:2024-01-01",
		"analytics:user:u:a:2024-01-01:05",
		"analytics:user:u:2024-01-01",
		"analytics:pending",
		"analytics:staging:abc",
	} {
		_, err := s.Parse(key)
		assert.Error(t, err, key)
	}
}

func TestUnescape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		seg     string
		want    string
		wantErr string
	}{
		{seg: "", want: ""},
		{seg: "page_view", want: "page_view"},
		{seg: "a%3Ab", want: "a:b"},
		{seg: "%25%7B%7D%20%00%7F%0A", want: "%{} \x00\x7f\n"},
		{seg: "été", want: "été"},
		{seg: "%41", wantErr: "byte 0x41 is never escaped"},
		{seg: "x%5F", wantErr: "byte 0x5f is never escaped"},
		{seg: "%2D", wantErr: "byte 0x2d is never escaped"},
		{seg: "%C3%A9", wantErr: "byte 0xc3 is never escaped"},
		{seg: "%80", wantErr: "byte 0x80 is never escaped"},
		{seg: "%3a", wantErr: "malformed %-escape at offset 0"},
		{seg: "ab%3", wantErr: "malformed %-escape at offset 2"},
		{seg: "%", wantErr: "malformed %-escape"},
		{seg: "a:b", wantErr: "raw byte 0x3a must be escaped"},
		{seg: "%3Aa b", wantErr: "raw byte 0x20 must be escaped"},
	}
	for _, tt := range tests {
		t.Run(tt.seg, func(t *testing.T) {
			t.Parallel()
			got, err := Unescape(tt.seg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.seg, Escape(got), "the one spelling of the value")
		})
	}
}

func TestValidatePrefix(t *testing.T) {
	t.Parallel()
	require.Error(t, ValidatePrefix(""))
	require.Error(t, ValidatePrefix("a b"))
	require.Error(t, ValidatePrefix("a\nb"))
	require.NoError(t, ValidatePrefix("{tenant:1}"))
	_, err := New("")
	require.Error(t, err)
}

func TestHashTag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prefix string
		tag    string
		ok     bool
	}{
		{"analytics", "", false},
		{"{analytics}", "analytics", true},
		{"app:{tenant:1}:analytics", "tenant:1", true},
		{"{a}{b}", "a", true},
		{"{}analytics", "", false},
		{"{}{analytics}", "", false}, // Redis hashes the whole key when the first tag is empty
		{"analytics{", "", false},
		{"analytics}{x", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			t.Parallel()
			tag, ok := HashTag(tt.prefix)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.tag, tag)
		})
	}
}

// TestKeysShareThePrefixHashTag applies Redis Cluster's hash tag rule to whole
// keys: ids and types with braces must not move a key to another slot.
func TestKeysShareThePrefixHashTag(t *testing.T) {
	t.Parallel()
	s := mustSchema(t, "{tenant}")
	hour := HourOf(time.Date(2025, 6, 1, 9, 0, 0, 0, time.UTC))
	keys := []string{s.PendingKey(), s.StagingIndexKey(), s.StagingKey("id"), s.StagingClaimKey("id"), s.BatchKey("b"), s.ResourceKey("r"), s.QuarantineKey()}
	for _, c := range []Counter{
		{Family: Daily, EventType: "}{x}", Hour: hour},
		{Family: Hourly, EventType: "{", Hour: hour},
		{Family: UserDaily, EventType: "a}", UserID: "{u}", Hour: hour},
	} {
		keys = append(keys, s.Key(c))
	}
	for _, k := range keys {
		tag, ok := HashTag(k) // CLUSTER KEYSLOT's rule, applied to the whole key
		assert.True(t, ok, k)
		assert.Equal(t, "tenant", tag, k)
	}
}

func TestDateConversionsAgreeWithTime(t *testing.T) {
	t.Parallel()
	for day := int64(-800_000); day <= 2_932_896; day += 997 {
		y, m, d := civilFromDays(day)
		tm := time.Unix(day*86400, 0).UTC()
		require.Equal(t, int64(tm.Year()), y, day)
		require.Equal(t, int64(tm.Month()), m, day)
		require.Equal(t, int64(tm.Day()), d, day)
		require.Equal(t, day, daysFromCivil(y, m, d))
	}
}

func TestHourHelpers(t *testing.T) {
	t.Parallel()
	ts := time.Date(2025, 12, 31, 23, 30, 0, 0, time.UTC)
	h := HourOf(ts)
	assert.Equal(t, h, HourOfUnixNano(ts.UnixNano()))
	c := Counter{Family: Hourly, Hour: h}
	assert.Equal(t, time.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC), c.Start())
	assert.Equal(t, h/24, c.Day())
	assert.True(t, ValidHour(h))
	assert.False(t, ValidHour(maxHour+1))
	assert.Equal(t, "user_daily", UserDaily.String())
	assert.Equal(t, "family(9)", Family(9).String())
}

func FuzzEscapeRoundTrip(f *testing.F) {
	for _, seed := range []string{"", "page_view", "a:b", "%", "%3A", "{x}", "été", "\x00\xff", " \t\n"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		esc := Escape(s)
		got, err := Unescape(esc)
		if err != nil {
			t.Fatalf("Unescape(Escape(%q)) = %v", s, err)
		}
		if got != s {
			t.Fatalf("round trip %q -> %q -> %q", s, esc, got)
		}
		for i := 0; i < len(esc); i++ {
			if esc[i] == ':' || esc[i] == '{' || esc[i] == '}' || esc[i] <= ' ' {
				t.Fatalf("escaped %q still holds byte %q", esc, esc[i])
			}
		}
	})
}

// FuzzUnescapeRoundTrip: a segment that Unescape accepts is the escaped
// form of what it returns, byte for byte.
func FuzzUnescapeRoundTrip(f *testing.F) {
	for _, seed := range []string{"", "page_view", "a%3Ab", "%41", "%3a", "%25%25", "%C3%A9", "été", "%7B%7D", "%", "a b"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seg string) {
		v, err := Unescape(seg)
		if err != nil {
			return
		}
		if esc := Escape(v); esc != seg {
			t.Fatalf("Unescape(%q) = %q, which escapes to %q", seg, v, esc)
		}
	})
}

// FuzzParseRoundTrip: a key that Parse accepts is the key AppendKey builds
// for the counter it returns, byte for byte, so that no two keys name one
// counter.
func FuzzParseRoundTrip(f *testing.F) {
	for _, seed := range []string{
		"analytics:counter:page_view:2024-03-09",
		"analytics:counter:page_view:2024-03-09:14",
		"analytics:user:x%3Ay:a%3Ab:2024-03-09",
		"analytics:counter:%41:2024-01-01",
		"analytics:user::a:2024-01-01",
		"analytics:prop:gen:model:gpt-4:2024-03-09:14",
		"analytics:prop:gen:model::2024-03-09",
		"analytics:sum:gen:tokens:2024-03-09",
		"analytics:sum:gen:tokens:x:2024-03-09",
		"analytics:counter:t:0000-01-01",
		"analytics:counter:%7Bslot%7D:9999-12-31:23",
	} {
		f.Add(seed)
	}
	s := mustSchema(f, DefaultPrefix)
	f.Fuzz(func(t *testing.T, key string) {
		c, err := s.Parse(key)
		if err != nil {
			return
		}
		if again := s.Key(c); again != key {
			t.Fatalf("Parse(%q) = %+v, whose key is %q", key, c, again)
		}
	})
}

func FuzzKeyRoundTrip(f *testing.F) {
	f.Add(uint8(1), "page_view", "", int64(474_000))
	f.Add(uint8(2), "a:b", "", int64(-5))
	f.Add(uint8(3), "t", "u:1%{}", int64(0))
	f.Add(uint8(4), "t", "model:gpt-4", int64(480_000))
	f.Add(uint8(5), "t", "url.path:/a:b", int64(480_001))
	f.Add(uint8(6), "t", "tokens:", int64(480_000))
	f.Add(uint8(7), "t", "tokens:", int64(-1))
	// labels holds the family's other segments: the user id, or the
	// attribute and the value separated by the first ':'.
	f.Fuzz(func(t *testing.T, fam uint8, eventType, labels string, hour int64) {
		family := Family(fam%7 + 1)
		if eventType == "" || !ValidHour(hour) {
			return
		}
		if !family.IsHourly() {
			hour -= floorMod(hour, 24)
		}
		c := Counter{Family: family, EventType: eventType, Hour: hour}
		attr, value, _ := strings.Cut(labels, ":")
		switch family {
		case UserDaily:
			c.UserID = labels
		case PropertyDaily, PropertyHourly:
			c.Attribute, c.Value = attr, value
		case SumDaily, SumHourly:
			c.Attribute = attr
		default:
		}
		if (family == UserDaily && c.UserID == "") ||
			(family >= PropertyDaily && c.Attribute == "") ||
			(family <= PropertyHourly && family >= PropertyDaily && c.Value == "") {
			return // the schema has no key for an empty segment
		}
		s := mustSchema(t, DefaultPrefix)
		key := s.Key(c)
		got, err := s.Parse(key)
		if err != nil {
			t.Fatalf("Parse(%q): %v", key, err)
		}
		if got != c {
			t.Fatalf("round trip %+v -> %q -> %+v", c, key, got)
		}
		if utf8.ValidString(eventType) && utf8.ValidString(labels) && !utf8.ValidString(key) {
			t.Fatalf("key %q of valid UTF-8 values is not valid UTF-8", key)
		}
	})
}

func BenchmarkAppendKey(b *testing.B) {
	s := mustSchema(b, DefaultPrefix)
	c := Counter{Family: UserDaily, EventType: "generation_completed", UserID: "user_12345", Hour: 480_000}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = s.AppendKey(buf[:0], c)
	}
}

func TestValidatePrefixFor(t *testing.T) {
	t.Parallel()
	require.NoError(t, ValidatePrefixFor("analytics", false))
	require.NoError(t, ValidatePrefixFor("{analytics}", true))
	require.NoError(t, ValidatePrefixFor("app:{tenant-1}", true))
	for _, prefix := range []string{"analytics", "{}x", "a{b"} {
		assert.ErrorContains(t, ValidatePrefixFor(prefix, true), "must hold a hash tag", prefix)
	}
}
