package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// errBadEscape is returned by Unescape for a '%' not followed by two
// upper-case hex digits, or escaping a byte that Escape leaves raw.
var errBadEscape = errors.New("malformed %-escape")

const hexDigits = "0123456789ABCDEF"

// needsEscape reports whether b must be percent-encoded inside a key segment:
// the separator ':', the escape byte '%', the Redis Cluster hash-tag braces
// (a user id must never choose the slot), and ASCII control and space bytes,
// which make keys unreadable in redis-cli. Bytes >= 0x80 (UTF-8) stay raw.
func needsEscape(b byte) bool {
	return b <= ' ' || b == 0x7f || b == ':' || b == '%' || b == '{' || b == '}'
}

// AppendEscape appends the escaped form of s to dst. The mapping is injective,
// so two different values never produce the same segment.
func AppendEscape(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if needsEscape(b) {
			dst = append(dst, '%', hexDigits[b>>4], hexDigits[b&0x0f])
			continue
		}
		dst = append(dst, b)
	}
	return dst
}

// Escape returns the escaped form of s.
func Escape(s string) string {
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			return string(AppendEscape(make([]byte, 0, len(s)+8), s))
		}
	}
	return s
}

// Unescape reverses Escape. It rejects malformed escapes, escapes of bytes
// that Escape leaves raw (such as "%41" for "A") and raw bytes that Escape
// would have encoded, so every accepted segment is the escaped form of the
// value it returns: Escape(Unescape(seg)) == seg, and each value has exactly
// one spelling.
func Unescape(seg string) (string, error) {
	if !strings.ContainsRune(seg, '%') {
		for i := 0; i < len(seg); i++ {
			if needsEscape(seg[i]) {
				return "", fmt.Errorf("raw byte 0x%02x must be escaped", seg[i])
			}
		}
		return seg, nil
	}
	out := make([]byte, 0, len(seg))
	for i := 0; i < len(seg); i++ {
		b := seg[i]
		switch {
		case b == '%':
			if i+2 >= len(seg) {
				return "", fmt.Errorf("%w at offset %d", errBadEscape, i)
			}
			hi, okHi := unhex(seg[i+1])
			lo, okLo := unhex(seg[i+2])
			if !okHi || !okLo {
				return "", fmt.Errorf("%w at offset %d", errBadEscape, i)
			}
			b = hi<<4 | lo
			if !needsEscape(b) {
				return "", fmt.Errorf("%w at offset %d: byte 0x%02x is never escaped", errBadEscape, i, b)
			}
			out = append(out, b)
			i += 2
		case needsEscape(b):
			return "", fmt.Errorf("raw byte 0x%02x must be escaped", b)
		default:
			out = append(out, b)
		}
	}
	return string(out), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	default:
		// Lower-case hex is not produced by Escape; rejecting it keeps one
		// spelling per value.
		return 0, false
	}
}
