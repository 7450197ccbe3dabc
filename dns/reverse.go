package dns

import (
	"net/netip"
	"strings"
)

const (
	suffixV4 = "in-addr.arpa."
	suffixV6 = "ip6.arpa."
	hexDigit = "0123456789abcdef"
)

// reverseName returns the reverse-lookup name of ip, fully qualified and
// lowercase: "4.3.2.1.in-addr.arpa." for 1.2.3.4 and 32 nibbles under
// ip6.arpa. for IPv6 (IPv4-mapped addresses included). It returns "" for
// the zero Addr. The zone is ignored.
func reverseName(ip netip.Addr) string {
	switch {
	case ip.Is4():
		a := ip.As4()
		var b strings.Builder
		b.Grow(len("255.255.255.255.") + len(suffixV4))
		for i := 3; i >= 0; i-- {
			writeUint8(&b, a[i])
			b.WriteByte('.')
		}
		b.WriteString(suffixV4)
		return b.String()
	case ip.Is6():
		a := ip.As16()
		buf := make([]byte, 0, 64+len(suffixV6))
		for i := 15; i >= 0; i-- {
			buf = append(buf, hexDigit[a[i]&0xf], '.', hexDigit[a[i]>>4], '.')
		}
		buf = append(buf, suffixV6...)
		return string(buf)
	}
	return ""
}

func writeUint8(b *strings.Builder, v byte) {
	if v >= 100 {
		b.WriteByte('0' + v/100)
	}
	if v >= 10 {
		b.WriteByte('0' + v/10%10)
	}
	b.WriteByte('0' + v%10)
}

// parseReverseName parses a complete reverse-lookup name, the inverse of
// reverseName: exactly four decimal octets (no leading zeros) under
// in-addr.arpa, or exactly 32 single hex-digit labels under ip6.arpa. The
// trailing dot is optional and letters may be of either case. Partial
// names (a reverse zone rather than one address) and anything else return
// false.
func parseReverseName(name string) (netip.Addr, bool) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	switch {
	case hasSuffixFold(name, "."+suffixV4):
		return parseReverse4(name[:len(name)-len(suffixV4)])
	case hasSuffixFold(name, "."+suffixV6):
		return parseReverse6(name[:len(name)-len(suffixV6)])
	}
	return netip.Addr{}, false
}

// parseReverse4 parses "d.c.b.a." (with the final dot).
func parseReverse4(s string) (netip.Addr, bool) {
	var a [4]byte
	for i := 3; i >= 0; i-- {
		dot := strings.IndexByte(s, '.')
		if dot < 1 || dot > 3 || (dot > 1 && s[0] == '0') {
			return netip.Addr{}, false
		}
		v := 0
		for _, c := range []byte(s[:dot]) {
			if c < '0' || c > '9' {
				return netip.Addr{}, false
			}
			v = v*10 + int(c-'0')
		}
		if v > 255 {
			return netip.Addr{}, false
		}
		a[i] = byte(v)
		s = s[dot+1:]
	}
	if s != "" {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(a), true
}

// parseReverse6 parses 32 "n." nibble labels, least significant first.
func parseReverse6(s string) (netip.Addr, bool) {
	if len(s) != 64 {
		return netip.Addr{}, false
	}
	var a [16]byte
	for i := 0; i < 32; i++ {
		n, ok := unhex(s[2*i])
		if !ok || s[2*i+1] != '.' {
			return netip.Addr{}, false
		}
		// Label i is nibble 31-i counting from the most significant.
		j := 31 - i
		if j%2 == 0 {
			a[j/2] |= n << 4
		} else {
			a[j/2] |= n
		}
	}
	return netip.AddrFrom16(a), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// isReverseName reports whether a lowercase FQDN lies under in-addr.arpa.
// or ip6.arpa. (the zones themselves included).
func isReverseName(name string) bool {
	return name == suffixV4 || name == suffixV6 ||
		strings.HasSuffix(name, "."+suffixV4) || strings.HasSuffix(name, "."+suffixV6)
}

// reverseZone returns the reverse zone that covers p on a label boundary:
// p's bits rounded down to whole octets (IPv4) or nibbles (IPv6). For
// 100.64.0.0/10 that is "100.in-addr.arpa.".
func reverseZone(p netip.Prefix) string {
	full := reverseName(p.Addr())
	if full == "" {
		return ""
	}
	var labels, total int
	if p.Addr().Is4() {
		labels, total = p.Bits()/8, 4
	} else {
		labels, total = p.Bits()/4, 32
	}
	// Skip the (total - labels) least significant labels.
	s := full
	for i := 0; i < total-labels; i++ {
		s = s[strings.IndexByte(s, '.')+1:]
	}
	return s
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}
