package ice

import "encoding/binary"

// Just enough STUN (RFC 8489) to decide, without allocating, whether a
// packet belongs to an ICE session: pion does the real parsing.

const (
	stunHeaderSize  = 20
	stunMagicCookie = 0x2112A442
	attrUsername    = 0x0006
)

// stunClass is the message class of a STUN message type.
type stunClass uint8

const (
	classRequest stunClass = iota
	classIndication
	classSuccess
	classError
)

// IsSTUN reports whether b looks like a STUN message: the top two bits of
// the first byte clear, the magic cookie at bytes 4..8, and a length that
// matches the datagram. It is the test the socket's demultiplexer should
// use before calling Mux.Deliver.
func IsSTUN(b []byte) bool {
	if len(b) < stunHeaderSize || b[0]&0xC0 != 0 {
		return false
	}
	if binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	return n%4 == 0 && n == len(b)-stunHeaderSize
}

func stunClassOf(b []byte) stunClass {
	t := binary.BigEndian.Uint16(b[0:2])
	return stunClass((t>>7)&2 | (t>>4)&1)
}

// stunTxID returns the transaction ID of a message that passed IsSTUN.
func stunTxID(b []byte) [12]byte { return [12]byte(b[8:20]) }

// stunUsernameUfrag returns the part of the USERNAME attribute before the
// first ':' (in an ICE check, the receiver's ufrag), if the message has one.
func stunUsernameUfrag(b []byte) ([]byte, bool) {
	attrs := b[stunHeaderSize:]
	for len(attrs) >= 4 {
		typ := binary.BigEndian.Uint16(attrs[0:2])
		n := int(binary.BigEndian.Uint16(attrs[2:4]))
		if 4+n > len(attrs) {
			return nil, false
		}
		if typ == attrUsername {
			v := attrs[4 : 4+n]
			for i, c := range v {
				if c == ':' {
					return v[:i], true
				}
			}
			return v, true
		}
		padded := 4 + (n+3)&^3
		if padded > len(attrs) {
			return nil, false
		}
		attrs = attrs[padded:]
	}
	return nil, false
}
