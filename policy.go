package weft

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-net/weft/trust"
)

// The network's policy (a quorum-signed trust.Policy: which tags may reach
// which ports) is enforced on the receive path, where decrypted packets
// from peers enter this node's stack. Only new flows are judged: a TCP
// segment that opens a connection (SYN without ACK), a UDP datagram that
// is not a reply to a flow this node started, an ICMP echo request.
// Everything else belongs to a flow that was allowed, or is harmless to
// the stack (a stray ACK gets a reset). Without a policy, everything is
// allowed and the filter costs one atomic load per batch.

// policyState is the compiled policy, replaced as a whole.
type policyState struct {
	policy *trust.Policy
	self   []string                // this node's tags
	tags   map[netip.Addr][]string // peers' tags by overlay address
}

// udpFlowTTL is how long replies to a UDP flow this node started are let
// in without a rule.
const udpFlowTTL = 2 * time.Minute

// flowKey names a UDP flow from this node's point of view.
type flowKey struct {
	peer          netip.Addr
	local, remote uint16
}

// filter is the receive-path policy filter.
type filter struct {
	state   atomic.Pointer[policyState]
	dropped atomic.Uint64

	mu    sync.Mutex        // guards flows
	flows map[flowKey]int64 // expiry, Unix seconds

	scratch sync.Pool // [][]byte for the kept packets of a batch
}

func newFilter() *filter {
	return &filter{flows: make(map[flowKey]int64)}
}

// update installs the policy in force and the tags of the known peers.
func (f *filter) update(p *trust.Policy, self []string, peers map[netip.Addr][]string) {
	if p == nil {
		f.state.Store(nil)
		return
	}
	f.state.Store(&policyState{policy: p, self: self, tags: peers})
}

// noteOutbound records UDP flows this node starts, so that replies pass.
func (f *filter) noteOutbound(pkt []byte, now int64) {
	if f.state.Load() == nil {
		return
	}
	h, ok := parseTransport(pkt)
	if !ok || h.proto != 17 {
		return
	}
	k := flowKey{peer: h.dst, local: h.srcPort, remote: h.dstPort}
	f.mu.Lock()
	if len(f.flows) > 65536 {
		for k, exp := range f.flows {
			if exp < now {
				delete(f.flows, k)
			}
		}
	}
	f.flows[k] = now + int64(udpFlowTTL/time.Second)
	f.mu.Unlock()
}

// allowInbound judges one packet from a peer.
func (f *filter) allowInbound(st *policyState, pkt []byte, now int64) bool {
	h, ok := parseTransport(pkt)
	if !ok {
		return true // not IP we can parse: the stack drops it anyway
	}
	var proto string
	switch h.proto {
	case 6:
		if h.tcpFlags&0x12 != 0x02 { // only SYN without ACK opens a connection
			return true
		}
		proto = "tcp"
	case 17:
		f.mu.Lock()
		exp, ok := f.flows[flowKey{peer: h.src, local: h.dstPort, remote: h.srcPort}]
		f.mu.Unlock()
		if ok && exp >= now {
			return true
		}
		proto = "udp"
	case 1, 58:
		if !h.echoRequest {
			return true
		}
		proto = "icmp"
	default:
		proto = "*"
	}
	return st.policy.Allows(st.tags[h.src], st.self, proto, h.dstPort)
}

// filterInbound drops the packets of bufs the policy refuses; it returns
// the packets to deliver.
func (f *filter) filterInbound(bufs [][]byte, offset int) [][]byte {
	st := f.state.Load()
	if st == nil {
		return bufs
	}
	now := time.Now().Unix()
	var kept [][]byte
	if s, ok := f.scratch.Get().(*[][]byte); ok {
		kept = (*s)[:0]
	}
	for _, b := range bufs {
		if f.allowInbound(st, b[offset:], now) {
			kept = append(kept, b)
		} else {
			f.dropped.Add(1)
		}
	}
	return kept
}

// release returns a slice from filterInbound.
func (f *filter) release(kept [][]byte, bufs [][]byte) {
	if len(bufs) > 0 && len(kept) > 0 && &kept[0] == &bufs[0] {
		return // the unfiltered slice
	}
	if cap(kept) > 0 {
		kept = kept[:0]
		f.scratch.Put(&kept)
	}
}

// transportHeader is what the filter needs of a packet.
type transportHeader struct {
	proto            byte
	src, dst         netip.Addr
	srcPort, dstPort uint16
	tcpFlags         byte
	echoRequest      bool
}

// parseTransport reads the IP and transport headers of a packet.
func parseTransport(p []byte) (transportHeader, bool) {
	var h transportHeader
	if len(p) < 1 {
		return h, false
	}
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return h, false
		}
		ihl := int(p[0]&0x0f) * 4
		if ihl < 20 || len(p) < ihl {
			return h, false
		}
		if binary.BigEndian.Uint16(p[6:8])&0x1fff != 0 {
			return h, false // a later fragment: no transport header
		}
		h.proto = p[9]
		h.src = netip.AddrFrom4([4]byte(p[12:16]))
		h.dst = netip.AddrFrom4([4]byte(p[16:20]))
		l4 = p[ihl:]
	case 6:
		if len(p) < 40 {
			return h, false
		}
		h.proto = p[6] // extension headers are not followed: judged as "*"
		h.src = netip.AddrFrom16([16]byte(p[8:24]))
		h.dst = netip.AddrFrom16([16]byte(p[24:40]))
		l4 = p[40:]
	default:
		return h, false
	}
	switch h.proto {
	case 6:
		if len(l4) < 14 {
			return h, false
		}
		h.srcPort, h.dstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		h.tcpFlags = l4[13]
	case 17:
		if len(l4) < 8 {
			return h, false
		}
		h.srcPort, h.dstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case 1:
		h.echoRequest = len(l4) > 0 && l4[0] == 8
	case 58:
		h.echoRequest = len(l4) > 0 && l4[0] == 128
	}
	return h, true
}

// updatePolicyLocked recompiles the filter from the view's policy and the
// configured peers' tags.
func (n *Node) updatePolicyLocked() {
	p := n.view.Policy()
	if p == nil {
		n.filter.update(nil, nil, nil)
		return
	}
	tags := make(map[netip.Addr][]string, 2*len(n.peers))
	for _, ps := range n.peers {
		tags[ps.rec.Cert.IPv4] = ps.rec.Cert.Tags
		tags[ps.rec.Cert.IPv6()] = ps.rec.Cert.Tags
	}
	n.filter.update(p, n.cert.Tags, tags)
}
