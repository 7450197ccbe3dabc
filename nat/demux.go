package nat

import "encoding/binary"

// kind is what a datagram on the shared socket carries.
type kind uint8

const (
	kindUnknown kind = iota
	kindWireGuard
	kindControl
	kindSTUN
	kindTURNChannel
)

func (k kind) String() string {
	switch k {
	case kindWireGuard:
		return "wireguard"
	case kindControl:
		return "control"
	case kindSTUN:
		return "stun"
	case kindTURNChannel:
		return "turn-channel"
	}
	return "unknown"
}

const stunMagicCookie = 0x2112A442

// classify demultiplexes a datagram on its first bytes.
func classify(b []byte) kind {
	if len(b) < 4 {
		return kindUnknown
	}
	switch {
	case b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0:
		return kindWireGuard
	case b[0] == controlMagic[0] && b[1] == controlMagic[1] && b[2] == controlMagic[2] && b[3] == controlMagic[3]:
		return kindControl
	case len(b) >= 20 && b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie:
		return kindSTUN
	case b[0] >= 0x40 && b[0] <= 0x4F: // RFC 8656 channel numbers 0x4000..0x4FFF (RFC 7983 64..79)
		return kindTURNChannel
	}
	return kindUnknown
}
