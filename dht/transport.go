package dht

import (
	"context"
	"fmt"
	"net/netip"
)

// MsgType identifies a control message on the Transport. The numbers are
// shared with nat's control-message space (nat.MsgFindValue and friends), so
// the adapter between the two is a plain conversion.
type MsgType uint8

// Message types served by this package. The values match the nat constants
// MsgFindValue=3, MsgStore=4, MsgFindNode=5 and MsgPing=7; MsgGossip=11 is
// this package's (nat carries any type).
const (
	MsgFindValue MsgType = 3
	MsgStore     MsgType = 4
	MsgFindNode  MsgType = 5
	MsgPing      MsgType = 7
	MsgGossip    MsgType = 11
)

func (t MsgType) String() string {
	switch t {
	case MsgFindValue:
		return "FIND_VALUE"
	case MsgStore:
		return "STORE"
	case MsgFindNode:
		return "FIND_NODE"
	case MsgPing:
		return "PING"
	case MsgGossip:
		return "GOSSIP"
	}
	return fmt.Sprintf("MsgType(%d)", uint8(t))
}

// Peer is the transport address of a remote node: where to send, and the
// Curve25519 public key its control messages are sealed to. The transport
// authenticates Key, so a Handler may trust from.Key (it keys the per-peer
// rate limits); Addr is only where the packet came from.
type Peer struct {
	Addr netip.AddrPort
	Key  [32]byte
}

func (p Peer) String() string {
	return fmt.Sprintf("%s/%x", p.Addr, p.Key[:4])
}

// Handler serves one request. from is the authenticated sender. A non-nil
// error is sent back to the caller as a remote error; handlers use it only
// for requests they cannot parse and report expected outcomes (not found,
// stale sequence, rate limited) inside the reply body.
type Handler func(ctx context.Context, from Peer, body []byte) ([]byte, error)

// Transport is the request/response seam between dht and the node's shared
// UDP socket. *nat.Conn satisfies it through a small adapter in package weft;
// dhttest provides an in-memory implementation for tests and the simulator.
//
// Contract:
//   - Call sends body to the peer as a request of type t and returns the
//     reply body. It retries as the transport sees fit and gives up when ctx
//     is done, returning an error that wraps ctx.Err(). A remote handler
//     error comes back as a non-nil error. Call must be safe for concurrent
//     use and must not retain body after returning.
//   - Handle registers h for requests of type t, replacing any earlier
//     handler. Handlers may run concurrently, must not retain body after
//     returning, and ctx is cancelled when the transport stops caring about
//     the reply.
type Transport interface {
	Call(ctx context.Context, to Peer, t MsgType, body []byte) ([]byte, error)
	Handle(t MsgType, h Handler)
}
