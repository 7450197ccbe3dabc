// Package dhttest provides an in-memory dht.Transport for tests and the
// simulator: a Network of Transports addressed by netip.AddrPort, calling
// each other's handlers directly.
//
// It models the parts of the real transport the DHT relies on: a call to
// an address nobody listens on, or to the right address with the wrong key
// (the real transport seals to the key, so the receiver drops it), is never
// answered and fails only when the caller's context is done; a handler
// error comes back as a *RemoteError; bodies are copied both ways. Handlers
// run on the caller's goroutine, so the fake starts no goroutines.
package dhttest

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/weft-net/weft/dht"
)

// Network connects Transports. The zero value is not usable; call
// NewNetwork.
type Network struct {
	mu    sync.Mutex // guards nodes
	nodes map[netip.AddrPort]*Transport
}

// NewNetwork returns an empty Network.
func NewNetwork() *Network {
	return &Network{nodes: make(map[netip.AddrPort]*Transport)}
}

// Add attaches a Transport for self, replacing any at self.Addr.
func (n *Network) Add(self dht.Peer) *Transport {
	t := &Transport{net: n, self: self, handlers: make(map[dht.MsgType]dht.Handler)}
	n.mu.Lock()
	n.nodes[self.Addr] = t
	n.mu.Unlock()
	return t
}

// Remove detaches the Transport at a; calls to it then go unanswered.
func (n *Network) Remove(a netip.AddrPort) {
	n.mu.Lock()
	delete(n.nodes, a)
	n.mu.Unlock()
}

func (n *Network) lookup(to dht.Peer) *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.nodes[to.Addr]
	if t == nil || t.self.Key != to.Key {
		return nil
	}
	return t
}

// Transport is one node's attachment to a Network.
type Transport struct {
	net  *Network
	self dht.Peer

	mu       sync.Mutex // guards handlers
	handlers map[dht.MsgType]dht.Handler
}

var _ dht.Transport = (*Transport)(nil)

// Peer returns the address and key others use to reach t.
func (t *Transport) Peer() dht.Peer { return t.self }

// Handle implements dht.Transport.
func (t *Transport) Handle(typ dht.MsgType, h dht.Handler) {
	t.mu.Lock()
	t.handlers[typ] = h
	t.mu.Unlock()
}

// RemoteError is a handler's error as seen by the caller.
type RemoteError struct {
	Msg string
}

func (e *RemoteError) Error() string { return "remote error: " + e.Msg }

// Call implements dht.Transport: it runs to's handler for typ on the
// calling goroutine, with from set to t's Peer.
func (t *Transport) Call(ctx context.Context, to dht.Peer, typ dht.MsgType, body []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("call %s %s: %w", to, typ, err)
	}
	dst := t.net.lookup(to)
	if dst == nil {
		<-ctx.Done()
		return nil, fmt.Errorf("call %s %s: no reply: %w", to, typ, ctx.Err())
	}
	dst.mu.Lock()
	h := dst.handlers[typ]
	dst.mu.Unlock()
	if h == nil {
		return nil, fmt.Errorf("call %s %s: %w", to, typ, &RemoteError{Msg: fmt.Sprintf("unknown message type %d", uint8(typ))})
	}
	reply, err := h(ctx, t.self, bytes.Clone(body))
	if err != nil {
		return nil, fmt.Errorf("call %s %s: %w", to, typ, &RemoteError{Msg: err.Error()})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("call %s %s: no reply: %w", to, typ, err)
	}
	return bytes.Clone(reply), nil
}
