package weft

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/nat"
)

// Reachability check: is this node reachable unsolicited at its advertised
// endpoints (a DHT server), or only through bindings it opens itself (a
// client)? Node A asks a server S (msgReachCheck, carrying a nonce and A's
// record); S asks up to reachHelpers other nodes T from its table
// (msgReachProbe) to send a sealed msgReachPing with the nonce to A's
// advertised endpoints. A has sent nothing to T, so a NAT in front of A
// holds no binding for it: if the ping arrives, A is reachable. A trusts
// only the ping it received itself (from someone other than S), never S's
// word; S's answer only says whether anyone was asked.
const (
	// msgReachCheck asks a server to have other nodes ping this node.
	msgReachCheck nat.MsgType = 12
	// msgReachProbe asks a node to ping another node's endpoints.
	msgReachProbe nat.MsgType = 13
	// msgReachPing is the unsolicited ping; it echoes the nonce.
	msgReachPing nat.MsgType = 14
)

// Reachability check answers (first byte of a msgReachCheck reply).
const (
	reachProbed   byte = 0 // helpers were asked to ping
	reachNoHelper byte = 1 // no other node to ask
	reachLimited  byte = 2 // asked too often
)

const (
	reachHelpers    = 2               // nodes a server asks to ping
	reachEndpoints  = 4               // endpoints of the record pinged
	reachPingWait   = 2 * time.Second // a helper's ping, with retransmits
	reachServeEvery = 10 * time.Second
	reachNonceLen   = 16
)

// reachWait is a check in flight: the server asked, and where a ping with
// its nonce arrived from.
type reachWait struct {
	asker dht.Peer
	got   chan netip.AddrPort // buffered 1
}

// checkReachability runs the check through the bootstrap nodes and the
// table's contacts, until one gives a conclusive answer, and sets the role
// from it. With nobody to ask, the role stays as it is (a server). It
// reports whether the answer was conclusive.
func (n *Node) checkReachability(ctx context.Context) bool {
	own := n.ownRecord()
	n.mu.Lock()
	askers := n.bootstrapPeersLocked()
	n.mu.Unlock()
	for _, c := range n.dht.Table().Closest(dht.NodeKey(n.nodeID), 3) {
		askers = append(askers, c.Peer)
	}
	tried := map[[32]byte]bool{}
	for _, s := range askers {
		if tried[s.Key] || len(tried) == 3 {
			continue
		}
		tried[s.Key] = true
		var nonce [reachNonceLen]byte
		crand.Read(nonce[:])
		w := &reachWait{asker: s, got: make(chan netip.AddrPort, 1)}
		n.disc.mu.Lock()
		n.disc.reach[nonce] = w
		n.disc.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := n.conn.Call(cctx, nat.Peer{Addr: s.Addr, Key: s.Key}, msgReachCheck, append(nonce[:], own...))
		cancel()
		probed := err == nil && len(out) == 2 && out[0] == reachProbed && out[1] > 0
		var from netip.AddrPort
		if probed {
			// The helpers acknowledged at once and ping now.
			select {
			case from = <-w.got:
			case <-time.After(reachPingWait + time.Second):
			case <-ctx.Done():
			}
		} else {
			select {
			case from = <-w.got:
			default:
			}
		}
		n.disc.mu.Lock()
		delete(n.disc.reach, nonce)
		n.disc.mu.Unlock()
		if from.IsValid() {
			n.setRole(DHTRoleServer, fmt.Sprintf("reachable: a node at %s reached this node unsolicited (check asked of %s)", from, s.Addr))
			return true
		}
		if !probed {
			n.logger.Debug("reachability check inconclusive", "asked", s.Addr, "answer", out, "err", err)
			continue
		}
		n.setRole(DHTRoleClient, fmt.Sprintf("not reachable: %d nodes asked by %s could not reach this node's advertised endpoints unsolicited", out[1], s.Addr))
		return true
	}
	role, _, _ := n.role()
	if role == DHTRoleServer {
		n.disc.mu.Lock()
		n.disc.roleWhy = "no other node could check reachability; staying a server"
		n.disc.mu.Unlock()
	}
	return false
}

// handleReachCheck serves a reachability check: the body is a nonce and
// the asker's record, whose key must be the sender's. Each member may ask
// once per reachServeEvery, and only its own record's first few endpoints
// are pinged, so the check cannot aim traffic elsewhere.
func (n *Node) handleReachCheck(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	if len(body) <= reachNonceLen {
		return nil, errors.New("bad reachability check")
	}
	nonce := body[:reachNonceLen]
	// Not learnt from: the asker does not know its role yet, and a record
	// of a node behind NAT that looks like a server's would let it into
	// routing tables.
	rec, err := n.checkRecord(body[reachNonceLen:], n.now())
	if err != nil {
		n.countReject(err)
		return nil, fmt.Errorf("reachability check refused: %w", err)
	}
	if rec.WireGuardKey() != from.Key {
		return nil, errors.New("reachability check refused: the record's key is not the sender's")
	}
	now := n.now()
	n.disc.mu.Lock()
	last, seen := n.disc.served[rec.Cert.NodeID]
	limited := seen && now.Sub(last.at) < reachServeEvery
	if !limited {
		if len(n.disc.served) > 4096 {
			clear(n.disc.served)
		}
		n.disc.served[rec.Cert.NodeID] = servedCheck{at: now, nonce: [reachNonceLen]byte(nonce)}
	}
	n.disc.mu.Unlock()
	if limited {
		if last.nonce == [reachNonceLen]byte(nonce) && last.answer != nil {
			return last.answer, nil // a retransmitted request
		}
		return []byte{reachLimited, 0}, nil
	}
	var helpers []dht.Contact
	for _, c := range n.dht.Table().Closest(dht.NodeKey(rec.Cert.NodeID), 4*reachHelpers) {
		if c.ID != rec.Cert.NodeID && c.Peer.Key != from.Key {
			helpers = append(helpers, c)
		}
	}
	rand.Shuffle(len(helpers), func(i, j int) { helpers[i], helpers[j] = helpers[j], helpers[i] })
	if len(helpers) > reachHelpers {
		helpers = helpers[:reachHelpers]
	}
	if len(helpers) == 0 {
		return []byte{reachNoHelper, 0}, nil
	}
	eps := rec.Endpoints
	if len(eps) > reachEndpoints {
		eps = eps[:reachEndpoints]
	}
	probe, err := encodeReachProbe(nonce, rec.WireGuardKey(), eps)
	if err != nil {
		return nil, err
	}
	// Count the helpers that ran the probe: only their silence says
	// anything about the asker.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		tried byte
	)
	for _, h := range helpers {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, dhtTimeout)
			defer cancel()
			out, err := n.conn.Call(cctx, nat.Peer{Addr: h.Peer.Addr, Key: h.Peer.Key}, msgReachProbe, probe)
			if err != nil || len(out) != 1 {
				n.logger.Debug("reachability probe failed", "helper", h.Peer.Addr, "err", err)
				return
			}
			mu.Lock()
			tried++
			mu.Unlock()
		})
	}
	wg.Wait()
	answer := []byte{reachProbed, tried}
	if tried == 0 {
		answer = []byte{reachNoHelper, 0}
	}
	n.disc.mu.Lock()
	if sc, ok := n.disc.served[rec.Cert.NodeID]; ok && sc.nonce == [reachNonceLen]byte(nonce) {
		sc.answer = answer
		n.disc.served[rec.Cert.NodeID] = sc
	}
	n.disc.mu.Unlock()
	return answer, nil
}

// handleReachProbe acknowledges at once and then pings the endpoints a
// server names, for a member's reachability check. Only members this node
// knows may ask, probesPerWindow times per probeWindow; a retransmitted probe (same nonce) is
// acknowledged again without pinging twice.
func (n *Node) handleReachProbe(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	nonce, key, eps, err := decodeReachProbe(body)
	if err != nil {
		return nil, err
	}
	now := n.now()
	n.disc.mu.Lock()
	_, member := n.disc.byKey[from.Key]
	last, seen := n.disc.probed[from.Key]
	dup := seen && last.nonce == [reachNonceLen]byte(nonce)
	if !seen || now.Sub(last.window) >= probeWindow {
		last = probeRun{window: now} // a new window
	}
	limited := !dup && last.count >= probesPerWindow
	if member && !limited && !dup {
		if len(n.disc.probed) > 4096 {
			clear(n.disc.probed)
		}
		last.count++
		last.nonce = [reachNonceLen]byte(nonce)
		n.disc.probed[from.Key] = last
	}
	n.disc.mu.Unlock()
	switch {
	case !member:
		return nil, errors.New("reachability probe refused: unknown sender")
	case limited:
		return nil, errors.New("reachability probe refused: too many")
	case dup:
		return []byte{byte(len(eps))}, nil
	}
	nonce = append([]byte(nil), nonce...)
	n.goBackground(func(ctx context.Context) {
		var wg sync.WaitGroup
		for _, ep := range eps {
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, reachPingWait)
				defer cancel()
				n.conn.Call(cctx, nat.Peer{Addr: ep, Key: key}, msgReachPing, nonce)
			})
		}
		wg.Wait()
	})
	return []byte{byte(len(eps))}, nil
}

// servedCheck is the last reachability check served for a member.
type servedCheck struct {
	at     time.Time
	nonce  [reachNonceLen]byte
	answer []byte // nil while it runs
}

// probeRun counts the probes run for an asking server in its current
// window, and remembers the last one's nonce.
type probeRun struct {
	window time.Time
	count  int
	nonce  [reachNonceLen]byte
}

// A server may ask one node for probesPerWindow probes per probeWindow:
// enough for a bootstrap node that many nodes join through at once, too
// few to aim a flood anywhere.
const (
	probeWindow     = 10 * time.Second
	probesPerWindow = 20
)

// handleReachPing notes a ping for a check in flight, unless it comes from
// the server that was asked (that one needs no unsolicited path).
func (n *Node) handleReachPing(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	if len(body) != reachNonceLen {
		return nil, errors.New("bad reachability ping")
	}
	n.disc.mu.Lock()
	w := n.disc.reach[[reachNonceLen]byte(body)]
	n.disc.mu.Unlock()
	if w != nil && from.Key != w.asker.Key && from.Addr != w.asker.Addr {
		select {
		case w.got <- from.Addr:
		default:
		}
	}
	return nil, nil
}

// encodeReachProbe packs nonce(16) key(32) count(1) and per endpoint
// len(1) netip.AddrPort binary.
func encodeReachProbe(nonce []byte, key [32]byte, eps []netip.AddrPort) ([]byte, error) {
	if len(nonce) != reachNonceLen || len(eps) > reachEndpoints {
		return nil, errors.New("bad reachability probe")
	}
	b := append([]byte(nil), nonce...)
	b = append(b, key[:]...)
	b = append(b, byte(len(eps)))
	for _, ep := range eps {
		eb, err := ep.MarshalBinary()
		if err != nil {
			return nil, err
		}
		b = append(b, byte(len(eb)))
		b = append(b, eb...)
	}
	return b, nil
}

// decodeReachProbe is the inverse of encodeReachProbe; it accepts only
// valid, specified endpoints and no trailing bytes.
func decodeReachProbe(b []byte) (nonce []byte, key [32]byte, eps []netip.AddrPort, err error) {
	bad := errors.New("bad reachability probe")
	if len(b) < reachNonceLen+32+1 {
		return nil, key, nil, bad
	}
	nonce, key = b[:reachNonceLen], [32]byte(b[reachNonceLen:reachNonceLen+32])
	count := int(b[reachNonceLen+32])
	b = b[reachNonceLen+33:]
	if count > reachEndpoints {
		return nil, key, nil, bad
	}
	for range count {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return nil, key, nil, bad
		}
		var ep netip.AddrPort
		if err := ep.UnmarshalBinary(b[1 : 1+int(b[0])]); err != nil || !ep.IsValid() || ep.Addr().IsUnspecified() || ep.Port() == 0 {
			return nil, key, nil, bad
		}
		eps = append(eps, ep)
		b = b[1+int(b[0]):]
	}
	if len(b) != 0 {
		return nil, key, nil, bad
	}
	return nonce, key, eps, nil
}
