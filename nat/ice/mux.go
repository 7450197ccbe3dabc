package ice

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	pion "github.com/pion/ice/v4"
	"github.com/pion/stun/v4"

	"github.com/weft-net/weft/nat/internal/pionlog"
)

// Tunables that are not worth a Config field yet.
const (
	// rxQueueLen bounds the STUN packets queued between Deliver and pion.
	// Checks are a few per pair every 200 ms; keepalives one per session
	// every 2 s. A full queue drops, and ICE retransmits.
	rxQueueLen = 1024

	// sentTTL is how long Deliver accepts a STUN response to a request the
	// Mux sent, or an indication from an address it sent STUN to. pion
	// gives up on a binding request after 4 s, on a STUN server after 5 s.
	sentTTL = 30 * time.Second

	// maxSentEntries bounds each of the sent-request and sent-to maps.
	maxSentEntries = 16384

	// defaultGatherTimeout bounds LocalDescription's wait for gathering.
	// pion's STUN timeout is 5 s; a TURN allocation is a few round trips.
	defaultGatherTimeout = 8 * time.Second
)

// Config configures NewMux.
type Config struct {
	// Send writes one datagram from the shared socket. It carries ICE's
	// STUN messages and, if Session.Write is used on a path with
	// Path.SharedSocket, those datagrams too (nat.Conn.SendSTUN only
	// takes STUN: with it, use Session.Write for relayed paths only). It
	// is called from pion's goroutines, must not block for long, and must
	// not keep b. It must not be nil.
	Send func(b []byte, to netip.AddrPort) error

	// LocalAddr is the shared socket's local address; its port must not
	// be zero. If the address is a specific one, it is the only host
	// candidate. If it is unspecified (0.0.0.0 or ::), the host
	// candidates are LocalAddrs.
	LocalAddr netip.AddrPort

	// LocalAddrs are the host candidate addresses of a socket bound to
	// the unspecified address, for example the addresses of the machine's
	// interfaces. A zero port means LocalAddr's port. It must be empty if
	// LocalAddr is a specific address. Empty with an unspecified
	// LocalAddr means no host candidates (only srflx and relay ones).
	LocalAddrs []netip.AddrPort

	// STUNServers are asked for the shared socket's public address (srflx
	// candidates), over the shared socket itself so that the answer is
	// the NAT mapping WireGuard uses. Empty means no srflx candidates.
	STUNServers []netip.AddrPort

	// TURN servers allocate relay candidates for every Session, besides
	// those of SessionConfig.TURN. Empty means relay candidates only from
	// sessions that name servers of their own.
	TURN []TURNServer

	// RelayOnly gathers only relay candidates, so every path goes through
	// a TURN server. For tests and for forcing a relay. Every session then
	// needs a TURN server, from TURN or its SessionConfig.TURN.
	RelayOnly bool

	// Logger receives diagnostics, with a "component"="ice" attribute;
	// pion's own logs are at Debug and below. Nil discards them.
	Logger *slog.Logger
}

// TURNServer is a TURN server and the long-term credential to allocate on
// it.
type TURNServer struct {
	Addr               netip.AddrPort
	Username, Password string
	// Transport is how the client reaches the server: "udp" or "tcp"
	// (the relayed side is UDP either way). Empty means "udp".
	Transport string
}

// check reports what is wrong with t, if anything.
func (t TURNServer) check() error {
	if !t.Addr.IsValid() || t.Addr.Port() == 0 {
		return fmt.Errorf("TURN server %s needs an address and a port", t.Addr)
	}
	if t.Username == "" || t.Password == "" {
		return fmt.Errorf("TURN server %s needs a username and a password", t.Addr)
	}
	switch t.Transport {
	case "", "udp", "tcp":
	default:
		return fmt.Errorf("TURN server %s: transport %q, want udp or tcp", t.Addr, t.Transport)
	}
	return nil
}

// uri is t in the form pion's agent takes.
func (t TURNServer) uri() *stun.URI {
	proto := stun.ProtoTypeUDP
	if t.Transport == "tcp" {
		proto = stun.ProtoTypeTCP
	}
	return &stun.URI{
		Scheme: stun.SchemeTypeTURN, Host: t.Addr.Addr().Unmap().String(), Port: int(t.Addr.Port()),
		Username: t.Username, Password: t.Password, Proto: proto,
	}
}

// Mux runs pion/ice agents (Sessions) over a shared UDP socket it does not
// own. The socket's owner hands it STUN packets with Deliver and sends for
// it through Config.Send; WireGuard packets never pass through it. Its
// methods are safe for concurrent use.
type Mux struct {
	log       *slog.Logger
	local     netip.AddrPort // Config.LocalAddr
	pc        *sharedConn
	udp       *pion.UniversalUDPMuxDefault
	host      *listenMux  // udp, with weft's host addresses
	srflx     *listenMux  // udp, with one address to gather srflx for
	urls      []*stun.URI // STUN servers and Config.TURN
	nTURN     int         // len(Config.TURN)
	networks  []pion.NetworkType
	types     []pion.CandidateType
	factory   pionlog.Factory
	relayOnly bool
	// testAgentOptions are added to every agent's options (tests shorten
	// pion's timeouts with them).
	testAgentOptions []pion.AgentOption
	dropped          atomic.Uint64 // STUN packets for ICE dropped on a full queue
	closeOnce        sync.Once

	mu       sync.Mutex // guards the fields below
	closed   bool
	sessions map[string]*Session // by local ufrag
	// sentTx holds the transaction IDs of STUN requests sent, sentTo the
	// addresses STUN was sent to, each with an expiry time.
	sentTx map[[12]byte]time.Time
	sentTo map[netip.AddrPort]time.Time
}

// listenMux is pion's universal mux with the host addresses weft chose
// rather than every address of every interface.
type listenMux struct {
	*pion.UniversalUDPMuxDefault
	mu    sync.Mutex // guards addrs, which SetLocalAddrs replaces
	addrs []net.Addr
}

func newListenMux(m *pion.UniversalUDPMuxDefault, addrs []net.Addr) *listenMux {
	return &listenMux{UniversalUDPMuxDefault: m, addrs: addrs}
}

func (l *listenMux) GetListenAddresses() []net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addrs
}

func (l *listenMux) setAddrs(addrs []net.Addr) {
	l.mu.Lock()
	l.addrs = addrs
	l.mu.Unlock()
}

// NewMux starts a Mux. Close it to stop its goroutines and every Session.
func NewMux(cfg Config) (*Mux, error) {
	if cfg.Send == nil {
		return nil, errors.New("ice mux: Config.Send is nil; pass the shared socket's send function")
	}
	local := unmap(cfg.LocalAddr)
	if !local.IsValid() || local.Port() == 0 {
		return nil, fmt.Errorf("ice mux: Config.LocalAddr %s needs an address and a port; pass the shared socket's local address", cfg.LocalAddr)
	}
	hosts, err := hostAddrs(local, cfg.LocalAddrs)
	if err != nil {
		return nil, fmt.Errorf("ice mux: Config.%w", err)
	}
	for _, s := range cfg.STUNServers {
		if !s.IsValid() || s.Port() == 0 {
			return nil, fmt.Errorf("ice mux: STUN server %s needs an address and a port", s)
		}
	}
	for _, t := range cfg.TURN {
		if err := t.check(); err != nil {
			return nil, fmt.Errorf("ice mux: %w", err)
		}
	}

	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "ice")
	m := &Mux{
		log:      log,
		factory:  pionlog.Factory{Log: log},
		sessions: make(map[string]*Session),
		sentTx:   make(map[[12]byte]time.Time),
		sentTo:   make(map[netip.AddrPort]time.Time),
	}
	m.pc = newSharedConn(local, rxQueueLen, cfg.Send, m.recordSent)

	var v4, v6 bool
	family := func(a netip.Addr) {
		if a.Unmap().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	for _, h := range hosts {
		family(h.Addr())
	}
	for _, s := range cfg.STUNServers {
		family(s.Addr())
		m.urls = append(m.urls, &stun.URI{Scheme: stun.SchemeTypeSTUN, Host: s.Addr().Unmap().String(), Port: int(s.Port()), Proto: stun.ProtoTypeUDP})
	}
	for _, t := range cfg.TURN {
		family(t.Addr.Addr())
		m.urls = append(m.urls, t.uri())
	}
	m.nTURN = len(cfg.TURN)

	if v4 || !v6 {
		m.networks = append(m.networks, pion.NetworkTypeUDP4)
	}
	if v6 {
		m.networks = append(m.networks, pion.NetworkTypeUDP6)
	}
	switch {
	case cfg.RelayOnly:
		m.relayOnly = true
		m.types = []pion.CandidateType{pion.CandidateTypeRelay}
	default:
		m.types = []pion.CandidateType{pion.CandidateTypeHost}
		if len(cfg.STUNServers) > 0 {
			m.types = append(m.types, pion.CandidateTypeServerReflexive)
		}
		if len(cfg.TURN) > 0 {
			m.types = append(m.types, pion.CandidateTypeRelay)
		}
	}

	m.udp = pion.NewUniversalUDPMuxDefault(pion.UniversalUDPMuxParams{
		Logger:  m.factory.NewLogger("udpmux"),
		UDPConn: m.pc,
		// pion keeps a server's answer for 25 s by default and has no way
		// to forget it: a session started after the machine moved to
		// another network (SetLocalAddrs) or its NAT re-mapped it would
		// offer the old mapping. Every gathering asks again (one round
		// trip to each STUN server).
		XORMappedAddrCacheTTL: time.Millisecond,
	})
	m.local = local
	m.host, m.srflx = newListenMux(m.udp, nil), newListenMux(m.udp, nil)
	m.setHosts(hosts)
	log.Debug("mux started", "local", local, "hosts", hosts, "stun", len(cfg.STUNServers), "turn", len(cfg.TURN), "relayOnly", cfg.RelayOnly)
	return m, nil
}

// hostAddrs checks the host candidate addresses of a socket bound to
// local (see Config.LocalAddrs) and fills in their ports.
func hostAddrs(local netip.AddrPort, addrs []netip.AddrPort) ([]netip.AddrPort, error) {
	if !local.Addr().IsUnspecified() {
		if len(addrs) > 0 {
			return nil, fmt.Errorf("LocalAddrs is only for a socket bound to the unspecified address, and LocalAddr is %s", local)
		}
		return []netip.AddrPort{local}, nil
	}
	var hosts []netip.AddrPort
	for _, h := range addrs {
		h = unmap(h)
		if h.Port() == 0 {
			h = netip.AddrPortFrom(h.Addr(), local.Port())
		}
		if !h.Addr().IsValid() || h.Addr().IsUnspecified() || h.Addr().IsMulticast() {
			return nil, fmt.Errorf("LocalAddrs has %s, which is not a unicast address", h)
		}
		if local.Addr().Is4() && h.Addr().Is6() {
			return nil, fmt.Errorf("LocalAddrs has IPv6 %s but the socket is IPv4-only (%s)", h, local)
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}

// setHosts makes hosts the addresses of host candidates, and the first
// the base of srflx ones.
func (m *Mux) setHosts(hosts []netip.AddrPort) {
	addrs := make([]net.Addr, len(hosts))
	for i, h := range hosts {
		addrs[i] = net.UDPAddrFromAddrPort(h)
	}
	m.host.setAddrs(addrs)
	// One srflx candidate per STUN server, whatever the number of host
	// addresses: they all share one socket, so one NAT mapping.
	srflx := net.Addr(net.UDPAddrFromAddrPort(m.local))
	if len(addrs) > 0 {
		srflx = addrs[0]
	}
	m.srflx.setAddrs([]net.Addr{srflx})
}

// SetLocalAddrs replaces Config.LocalAddrs, for a socket bound to the
// unspecified address whose machine changed addresses (it moved to
// another network). Sessions created afterwards gather the new host
// candidates; existing ones keep theirs.
func (m *Mux) SetLocalAddrs(addrs []netip.AddrPort) error {
	hosts, err := hostAddrs(m.local, addrs)
	if err != nil {
		return fmt.Errorf("ice mux: %w", err)
	}
	m.setHosts(hosts)
	m.log.Debug("host addresses changed", "hosts", hosts)
	return nil
}

// Deliver offers a STUN packet received on the shared socket to the Mux.
// It returns true if the packet belongs to ICE (a connectivity check for
// one of its sessions, or a response to a request it sent) and was
// consumed; false leaves it to the caller (for example a STUN server
// answering plain binding requests). pkt is not retained. Deliver never
// blocks.
func (m *Mux) Deliver(pkt []byte, from netip.AddrPort) bool {
	if !IsSTUN(pkt) {
		return false
	}
	from = unmap(from)
	now := time.Now()
	m.mu.Lock()
	ours := false
	switch {
	case m.closed:
	case stunClassOf(pkt) == classRequest:
		if u, ok := stunUsernameUfrag(pkt); ok {
			_, ours = m.sessions[string(u)]
		}
	case stunClassOf(pkt) == classIndication:
		exp, ok := m.sentTo[from]
		ours = ok && now.Before(exp)
	default: // a success or error response
		exp, ok := m.sentTx[stunTxID(pkt)]
		ours = ok && now.Before(exp)
	}
	m.mu.Unlock()
	if !ours {
		return false
	}
	if !m.pc.enqueue(pkt, from) {
		m.dropped.Add(1)
	}
	return true
}

// recordSent remembers the STUN requests ICE sends and where, so Deliver
// can claim the answers.
func (m *Mux) recordSent(b []byte, to netip.AddrPort) {
	if !IsSTUN(b) {
		return
	}
	exp := time.Now().Add(sentTTL)
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.sentTo) >= maxSentEntries || len(m.sentTx) >= maxSentEntries {
		m.expireSentLocked()
	}
	if len(m.sentTo) < maxSentEntries {
		m.sentTo[to] = exp
	}
	if stunClassOf(b) == classRequest && len(m.sentTx) < maxSentEntries {
		m.sentTx[stunTxID(b)] = exp
	}
}

func (m *Mux) expireSentLocked() {
	now := time.Now()
	for k, exp := range m.sentTx {
		if !now.Before(exp) {
			delete(m.sentTx, k)
		}
	}
	for k, exp := range m.sentTo {
		if !now.Before(exp) {
			delete(m.sentTo, k)
		}
	}
}

// Dropped returns the number of ICE packets Deliver accepted but dropped
// because pion was not reading fast enough.
func (m *Mux) Dropped() uint64 { return m.dropped.Load() }

// Close closes every Session, then stops pion's mux. It does not close the
// shared socket. It is idempotent.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		sessions := make([]*Session, 0, len(m.sessions))
		for _, s := range m.sessions {
			sessions = append(sessions, s)
		}
		m.mu.Unlock()
		for _, s := range sessions {
			s.Close()
		}
		m.udp.Close() // closes m.pc, which ends pion's reader
		m.log.Debug("mux closed")
	})
	return nil
}

// addSession registers s under its local ufrag.
func (m *Mux) addSession(s *Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, dup := m.sessions[s.ufrag]; dup {
		return fmt.Errorf("ice: duplicate ufrag %s", s.ufrag)
	}
	m.sessions[s.ufrag] = s
	return nil
}

func (m *Mux) removeSession(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sessions[s.ufrag] == s {
		delete(m.sessions, s.ufrag)
	}
}

// iceChars are the characters of ufrags and passwords (RFC 8445 ice-char).
const iceChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// randICEString returns n random ice-chars: 6 bits of entropy each.
func randICEString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = iceChars[b[i]&63]
	}
	return string(b)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
