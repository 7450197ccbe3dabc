package nat

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/nacl/box"
)

// MsgType identifies a control request. The numbers are part of the wire
// format and shared with dht.MsgType.
type MsgType uint8

// Control message types.
const (
	MsgHello     MsgType = 1 // public node information; may be sent plain (CallHello)
	MsgJoin      MsgType = 2 // join request to an anchor
	MsgFindValue MsgType = 3 // DHT FIND_VALUE
	MsgStore     MsgType = 4 // DHT STORE
	MsgFindNode  MsgType = 5 // DHT FIND_NODE
	MsgConnect   MsgType = 6 // ICE offer/answer relay
	MsgPing      MsgType = 7 // liveness
	// 8..15 are taken by package weft and package dht.

	// MsgProbe asks for an unsolicited packet, for netcheck's filtering
	// test (see probe.go).
	MsgProbe MsgType = 16

	// MsgRelayCreds asks a relay (a node running a TURN server, Relay)
	// for short-lived TURN credentials (see relaycreds.go).
	MsgRelayCreds MsgType = 17
)

func (t MsgType) String() string {
	switch t {
	case MsgHello:
		return "HELLO"
	case MsgJoin:
		return "JOIN"
	case MsgFindValue:
		return "FIND_VALUE"
	case MsgStore:
		return "STORE"
	case MsgFindNode:
		return "FIND_NODE"
	case MsgConnect:
		return "CONNECT"
	case MsgPing:
		return "PING"
	case MsgProbe:
		return "PROBE"
	case MsgRelayCreds:
		return "RELAY_CREDS"
	}
	return fmt.Sprintf("MsgType(%d)", uint8(t))
}

// Wire format constants.
const (
	// ControlVersion is the control packet format version.
	ControlVersion = 1

	// FlagPlain in the header marks an unsealed packet (MsgHello only).
	FlagPlain = 1 << 0

	// MaxPacketSize is the largest datagram the socket accepts. Larger
	// datagrams (possible on loopback or jumbo-frame links) are dropped.
	MaxPacketSize = 9000

	// MaxControlSize bounds a whole control packet.
	MaxControlSize = 8192

	headerSize     = 4 + 1 + 1 + 32 + 24
	payloadHdrSize = 1 + 8 + 1

	// MaxBodySize is the largest request or response body, sealed.
	MaxBodySize = MaxControlSize - headerSize - box.Overhead - payloadHdrSize

	// maxErrorMsg bounds a remote error message.
	maxErrorMsg = 512
)

// Payload flags.
const (
	payloadResponse = 1 << 0 // body is a response
	payloadError    = 1 << 1 // body is an error message (with payloadResponse)
)

var controlMagic = [4]byte{0xF7, 'w', 'f', 't'}

// header is the cleartext part of a control packet.
type header struct {
	flags  uint8
	sender [32]byte
	nonce  [24]byte
}

// payload is the (possibly sealed) part of a control packet.
type payload struct {
	typ   MsgType
	txid  uint64
	flags uint8
	body  []byte
}

func (p *payload) isResponse() bool { return p.flags&payloadResponse != 0 }
func (p *payload) isError() bool    { return p.flags&payloadError != 0 }

// appendHeader appends the encoded header to b.
func appendHeader(b []byte, h *header) []byte {
	b = append(b, controlMagic[:]...)
	b = append(b, ControlVersion, h.flags)
	b = append(b, h.sender[:]...)
	return append(b, h.nonce[:]...)
}

// parseHeader decodes the cleartext header of a control packet and returns
// the rest (the box, or the plain payload).
func parseHeader(b []byte) (h header, rest []byte, err error) {
	if len(b) < headerSize {
		return h, nil, fmt.Errorf("%w: %d bytes, header needs %d", ErrMalformed, len(b), headerSize)
	}
	if len(b) > MaxControlSize {
		return h, nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, len(b), MaxControlSize)
	}
	if [4]byte(b[0:4]) != controlMagic {
		return h, nil, fmt.Errorf("%w: bad magic", ErrMalformed)
	}
	if b[4] != ControlVersion {
		return h, nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, b[4], ControlVersion)
	}
	h.flags = b[5]
	if h.flags&^FlagPlain != 0 {
		return h, nil, fmt.Errorf("%w: unknown header flags %#x", ErrMalformed, h.flags)
	}
	copy(h.sender[:], b[6:38])
	copy(h.nonce[:], b[38:62])
	return h, b[headerSize:], nil
}

// appendPayload appends the encoded payload to b.
func appendPayload(b []byte, p *payload) []byte {
	b = append(b, byte(p.typ))
	b = binary.BigEndian.AppendUint64(b, p.txid)
	b = append(b, p.flags)
	return append(b, p.body...)
}

// parsePayload decodes a payload. body aliases b.
func parsePayload(b []byte) (p payload, err error) {
	if len(b) < payloadHdrSize {
		return p, fmt.Errorf("%w: payload %d bytes, needs %d", ErrMalformed, len(b), payloadHdrSize)
	}
	p.typ = MsgType(b[0])
	p.txid = binary.BigEndian.Uint64(b[1:9])
	p.flags = b[9]
	if p.flags&^(payloadResponse|payloadError) != 0 {
		return p, fmt.Errorf("%w: unknown payload flags %#x", ErrMalformed, p.flags)
	}
	if p.flags&payloadError != 0 && p.flags&payloadResponse == 0 {
		return p, fmt.Errorf("%w: error flag on a request", ErrMalformed)
	}
	p.body = b[payloadHdrSize:]
	return p, nil
}

// sealPacket builds a sealed control packet.
func sealPacket(h *header, p *payload, shared *[32]byte) []byte {
	out := make([]byte, 0, headerSize+box.Overhead+payloadHdrSize+len(p.body))
	out = appendHeader(out, h)
	plain := appendPayload(make([]byte, 0, payloadHdrSize+len(p.body)), p)
	return box.SealAfterPrecomputation(out, plain, &h.nonce, shared)
}

// plainPacket builds an unsealed control packet (MsgHello only).
func plainPacket(h *header, p *payload) []byte {
	out := make([]byte, 0, headerSize+payloadHdrSize+len(p.body))
	out = appendHeader(out, h)
	return appendPayload(out, p)
}

// errUnsealable reports a box that does not open with the shared key:
// tampered, truncated, or sealed for someone else.
var errUnsealable = errors.New("nat: control packet does not open")

// openPayload opens the box in rest with the shared key and decodes it.
func openPayload(h *header, rest []byte, shared *[32]byte) (payload, error) {
	plain, ok := box.OpenAfterPrecomputation(nil, rest, &h.nonce, shared)
	if !ok {
		return payload{}, errUnsealable
	}
	return parsePayload(plain)
}
