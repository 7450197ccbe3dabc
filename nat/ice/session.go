package ice

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pion "github.com/pion/ice/v4"
)

// SessionConfig configures Mux.NewSession.
type SessionConfig struct {
	// Controlling makes this side the ICE controlling agent, which
	// nominates the pair. Exactly one side of a connection must set it;
	// weft uses the side that sends the offer.
	Controlling bool

	// OnPacket is called with each non-STUN datagram that arrives over the
	// selected pair through pion: in practice, what the peer sent through
	// a TURN relay (see Path.SharedSocket). b is only valid during the
	// call. It is called from two goroutines: the session's reader, and
	// the TURN allocation's reader for ChannelData on the selected pair's
	// channel (turnfast.go), each in order; it must be safe for that and
	// must not call Session.Close. Nil discards them.
	OnPacket func(b []byte)

	// GatherTimeout bounds LocalDescription's wait for candidate
	// gathering; what was gathered by then is used. Zero means 8 s.
	GatherTimeout time.Duration

	// TURN servers allocate relay candidates for this session, besides
	// the Mux's Config.TURN: credentials that change (a weft relay's
	// expire) go here, one session at a time. A session on a relay path
	// keeps refreshing its allocation with these credentials; replace it
	// with a new session before they expire.
	TURN []TURNServer
}

// Path is a working candidate pair, the route packets to the peer take.
type Path struct {
	// Local and Remote are the pair's addresses. Local is the shared
	// socket's address (host), its public mapping (srflx or prflx), or
	// the address the TURN server relays from (relay).
	Local, Remote netip.AddrPort
	// LocalType and RemoteType are "host", "srflx", "prflx" or "relay".
	LocalType, RemoteType string
	// Relayed reports that packets pass through a TURN server, on either
	// side.
	Relayed bool
	// RTT is the latest connectivity check round trip; zero if none was
	// measured yet.
	RTT time.Duration
}

// SharedSocket reports whether WireGuard can use the path by sending from
// the shared socket to Remote, which is the case unless the local
// candidate is a TURN allocation. Otherwise packets must go through
// Session.Write and arrive through SessionConfig.OnPacket.
func (p Path) SharedSocket() bool { return p.LocalType != TypeRelay }

// IsZero reports whether p is the zero Path (no path).
func (p Path) IsZero() bool { return p == Path{} }

func (p Path) String() string {
	if p.IsZero() {
		return "no path"
	}
	s := fmt.Sprintf("%s %s -> %s %s", p.LocalType, p.Local, p.RemoteType, p.Remote)
	if p.RTT > 0 {
		s += fmt.Sprintf(" rtt %s", p.RTT.Round(10*time.Microsecond))
	}
	return s
}

// Session is one ICE agent: the connection attempt to one peer, and then
// the path to it, kept alive with consent checks (RFC 7675) every 2 s. Its
// methods are safe for concurrent use.
type Session struct {
	m           *Mux
	log         *slog.Logger
	agent       *pion.Agent
	ufrag       string
	controlling bool
	onPacket    func([]byte)
	gatherWait  time.Duration

	gathered  chan struct{} // closed when gathering completes
	connected chan struct{} // closed when ICE first reports Connected
	failed    chan struct{} // closed when ICE reports Failed
	closing   chan struct{} // closed by Close

	connectCalled atomic.Bool
	conn          atomic.Pointer[pion.Conn] // set by Connect

	tn   *turnNet                  // the TURN allocations' sockets; nil without relay candidates
	fast atomic.Pointer[fastRoute] // the selected relay pair's channel route, or nil

	mu           sync.Mutex // guards the fields below
	path         Path       // the selected pair, or zero
	reported     bool       // Connect returned, so path changes go to onPathChange
	onPathChange func(Path)

	stateOnce [3]sync.Once // gathered, connected, failed
	closeOnce sync.Once
	wg        sync.WaitGroup // the read loop
}

// relayAcceptanceWait is how long after checks start the controlling
// agent may nominate a pair through a TURN relay, so that a direct pair
// that works wins. pion waits 2 s by default, which is most of a relayed
// connect's time to first byte; hole punching takes a few check rounds
// (pion checks every 200 ms, and waits 500 ms for srflx pairs), and a
// direct path that appears later is found by the initiator's upgrade
// retries (package weft).
const relayAcceptanceWait = 600 * time.Millisecond

// NewSession creates an ICE agent on the shared socket and starts
// gathering its candidates. Close the Session when done with it.
func (m *Mux) NewSession(cfg SessionConfig) (*Session, error) {
	s := &Session{
		m:           m,
		ufrag:       randICEString(16),
		controlling: cfg.Controlling,
		onPacket:    cfg.OnPacket,
		gatherWait:  cfg.GatherTimeout,
		gathered:    make(chan struct{}),
		connected:   make(chan struct{}),
		failed:      make(chan struct{}),
		closing:     make(chan struct{}),
	}
	if s.gatherWait <= 0 {
		s.gatherWait = defaultGatherTimeout
	}
	s.log = m.log.With("ufrag", s.ufrag, "controlling", s.controlling)
	urls, networks, types := m.urls, m.networks, m.types
	if len(cfg.TURN) > 0 {
		urls = slices.Clone(m.urls)
		for _, t := range cfg.TURN {
			if err := t.check(); err != nil {
				return nil, fmt.Errorf("ice new session: %w", err)
			}
			urls = append(urls, t.uri())
			if t.Addr.Addr().Unmap().Is6() && !slices.Contains(networks, pion.NetworkTypeUDP6) {
				networks = append(slices.Clip(networks), pion.NetworkTypeUDP6)
			}
		}
		if !slices.Contains(types, pion.CandidateTypeRelay) {
			types = append(slices.Clip(types), pion.CandidateTypeRelay)
		}
	}
	if m.relayOnly && len(cfg.TURN) == 0 && m.nTURN == 0 {
		return nil, errors.New("ice new session: the Mux is RelayOnly and neither Config.TURN nor SessionConfig.TURN names a TURN server")
	}
	opts := []pion.AgentOption{
		pion.WithLocalCredentials(s.ufrag, randICEString(32)),
		pion.WithUDPMux(m.host),
		pion.WithUDPMuxSrflx(m.srflx),
		pion.WithUrls(urls),
		pion.WithNetworkTypes(networks),
		pion.WithCandidateTypes(types),
		pion.WithMulticastDNSMode(pion.MulticastDNSModeDisabled),
		pion.WithLoggerFactory(m.factory),
	}
	if m.relayOnly {
		// pion only drops its 2 s wait before nominating a relay pair
		// for relay-only agents built from an AgentConfig.
		opts = append(opts, pion.WithRelayAcceptanceMinWait(0))
	} else {
		opts = append(opts, pion.WithRelayAcceptanceMinWait(relayAcceptanceWait))
	}
	if slices.Contains(types, pion.CandidateTypeRelay) {
		// TURN allocations over UDP on sockets that keep pion from
		// asking a public TURN server to relay to private addresses,
		// which can cost the allocation (turnfilter.go).
		tn, err := newTURNNet()
		if err != nil {
			m.removeSession(s)
			return nil, fmt.Errorf("ice new session: %w", err)
		}
		opts = append(opts, pion.WithNet(tn))
		s.tn = tn
	}
	opts = append(opts, m.testAgentOptions...)
	agent, err := pion.NewAgentWithOptions(opts...)
	if err != nil {
		return nil, fmt.Errorf("ice new session: %w", err)
	}
	s.agent = agent
	// Registered only with its agent in place: a Mux.Close racing this
	// call either refuses the session here or closes its agent.
	if err := m.addSession(s); err != nil {
		agent.Close()
		return nil, fmt.Errorf("ice new session: %w", err)
	}
	err = errors.Join(
		agent.OnCandidate(func(c pion.Candidate) {
			if c == nil {
				s.stateOnce[0].Do(func() { close(s.gathered) })
			}
		}),
		agent.OnConnectionStateChange(s.stateChanged),
		agent.OnSelectedCandidatePairChange(s.pairChanged),
	)
	if err == nil {
		err = agent.GatherCandidates()
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("ice new session: %w", err)
	}
	s.log.Debug("session started")
	return s, nil
}

// LocalDescription waits for candidate gathering to complete (at most
// SessionConfig.GatherTimeout) and returns this side's credentials and
// candidates, the highest-priority MaxCandidates of them.
func (s *Session) LocalDescription() (Description, error) {
	t := time.NewTimer(s.gatherWait)
	defer t.Stop()
	select {
	case <-s.gathered:
	case <-t.C:
		s.log.Debug("gathering not complete; describing what there is", "after", s.gatherWait)
	case <-s.closing:
		return Description{}, ErrClosed
	}
	ufrag, pwd, err := s.agent.GetLocalUserCredentials()
	if err != nil {
		return Description{}, fmt.Errorf("ice local description: %w", err)
	}
	pcs, err := s.agent.GetLocalCandidates()
	if err != nil {
		return Description{}, fmt.Errorf("ice local description: %w", err)
	}
	d := Description{Ufrag: ufrag, Pwd: pwd}
	seen := make(map[Candidate]bool)
	for _, pc := range pcs {
		c, ok := fromPion(pc)
		if !ok || c.Type == TypePrflx || checkCandidate(c) != nil {
			continue
		}
		k := Candidate{Type: c.Type, Addr: c.Addr}
		if seen[k] {
			continue
		}
		seen[k] = true
		d.Candidates = append(d.Candidates, c)
	}
	if len(d.Candidates) == 0 {
		return Description{}, fmt.Errorf("ice local description: %w (host addresses, STUN and TURN servers all gave nothing; check Config.LocalAddrs, STUNServers and TURN)", ErrNoCandidates)
	}
	slices.SortFunc(d.Candidates, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(b.Priority, a.Priority), a.Addr.Compare(b.Addr))
	})
	if len(d.Candidates) > MaxCandidates {
		d.Candidates = d.Candidates[:MaxCandidates]
	}
	return d, nil
}

// Connect runs connectivity checks against the remote description (as the
// controlling agent if SessionConfig.Controlling, else waiting for the
// peer to nominate) and returns the selected path. It gives up when ctx
// is done, or when ICE declares failure (about 30 s without a working
// pair), with an error wrapping ErrNoPath. Connect may be called once;
// after an error, Close the Session.
func (s *Session) Connect(ctx context.Context, remote Description) (Path, error) {
	if err := remote.Validate(); err != nil {
		return Path{}, fmt.Errorf("ice connect: remote description: %w", err)
	}
	if len(remote.Candidates) == 0 {
		return Path{}, fmt.Errorf("ice connect: remote description: %w: it has no candidates", ErrBadDescription)
	}
	if !s.connectCalled.CompareAndSwap(false, true) {
		return Path{}, ErrConnectCalled
	}
	select {
	case <-s.closing:
		return Path{}, ErrClosed
	default:
	}
	for _, c := range remote.Candidates {
		pc, err := toPion(c)
		if err != nil {
			return Path{}, fmt.Errorf("ice connect: remote candidate %s: %w", c, err)
		}
		if err := s.agent.AddRemoteCandidate(pc); err != nil {
			return Path{}, fmt.Errorf("ice connect: remote candidate %s: %w", c, err)
		}
	}
	var conn *pion.Conn
	var err error
	if s.controlling {
		conn, err = s.agent.StartDial(remote.Ufrag, remote.Pwd)
	} else {
		conn, err = s.agent.StartAccept(remote.Ufrag, remote.Pwd)
	}
	if err != nil {
		return Path{}, fmt.Errorf("ice connect: %w", err)
	}
	s.conn.Store(conn)
	s.wg.Add(1)
	go s.readLoop(conn)
	s.log.Debug("checking", "remote", remote)

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	pairs := 0
	countPairs := func() {
		pairs = max(pairs, len(s.agent.GetCandidatePairsStats()))
	}
	noPath := func(cause error) error {
		countPairs()
		return fmt.Errorf("%w: no candidate pair worked (tried %d pairs): %w", ErrNoPath, pairs, cause)
	}
	for {
		select {
		case <-s.connected:
			// The selected-pair notification may still be on its way:
			// ask the agent.
			p, err := s.selectedPath()
			if err != nil {
				return Path{}, fmt.Errorf("ice connect: %w", err)
			}
			s.mu.Lock()
			s.path = p
			s.reported = true
			s.mu.Unlock()
			s.routeFast(p)
			p.RTT = s.rtt()
			s.log.Debug("connected", "path", p)
			return p, nil
		case <-s.failed:
			return Path{}, noPath(errors.New("ICE agent declared the connection failed"))
		case <-ctx.Done():
			return Path{}, noPath(context.Cause(ctx))
		case <-s.closing:
			return Path{}, ErrClosed
		case <-tick.C:
			countPairs()
		}
	}
}

// Path returns the selected path, or the zero Path before Connect
// succeeded or after the connection failed.
func (s *Session) Path() Path {
	s.mu.Lock()
	p := s.path
	s.mu.Unlock()
	if !p.IsZero() {
		p.RTT = s.rtt()
	}
	return p
}

// OnPathChange sets f to be called whenever the selected path changes
// after Connect returned: an upgrade from a relay to a direct pair, or a
// switch after a network change. f gets the zero Path when ICE declares
// the connection failed (consent lost for about 30 s). f runs on pion's
// notification goroutine: it must not block or call Session.Close.
func (s *Session) OnPathChange(f func(Path)) {
	s.mu.Lock()
	s.onPathChange = f
	s.mu.Unlock()
}

// Write sends one datagram over the selected pair: from the shared socket
// for host, srflx and prflx local candidates, through the TURN allocation
// for relay ones. It fails with ErrNotConnected before Connect succeeded
// and after the path was lost. b must not look like STUN (WireGuard packets
// never do).
func (s *Session) Write(b []byte) error {
	conn := s.conn.Load()
	if conn == nil || !s.isConnected() {
		return ErrNotConnected
	}
	select {
	case <-s.failed:
		return ErrNotConnected
	default:
	}
	if f := s.fast.Load(); f != nil {
		if ok, err := f.conn.writeChannel(f.peer, b); ok {
			if err != nil {
				return fmt.Errorf("ice write: %w", err)
			}
			return nil
		}
	}
	if _, err := conn.Write(b); err != nil {
		return fmt.Errorf("ice write: %w", err)
	}
	return nil
}

// fastRoute is where Write frames ChannelData itself (turnfast.go).
type fastRoute struct {
	conn *peerFilterConn
	peer netip.AddrPort
}

// routeFast points the fast path at p's relay allocation and remote
// address, or turns it off if p's local candidate is not a relay.
func (s *Session) routeFast(p Path) {
	if s.tn == nil {
		return
	}
	var c *peerFilterConn
	if !p.IsZero() && p.LocalType == TypeRelay {
		c = s.tn.connFor(p.Local)
	}
	if c == nil {
		s.fast.Store(nil)
		s.tn.setReceivers(netip.AddrPort{}, netip.AddrPort{}, nil)
		return
	}
	s.fast.Store(&fastRoute{conn: c, peer: p.Remote})
	if s.onPacket != nil {
		s.tn.setReceivers(p.Local, p.Remote, s.onPacket)
	}
}

// fastPathCounts returns how many datagrams went out, and came in, on the
// relay fast path (turnfast.go) of this session's allocations.
func (s *Session) fastPathCounts() (out, in uint64) {
	if s.tn == nil {
		return 0, 0
	}
	s.tn.mu.Lock()
	defer s.tn.mu.Unlock()
	for _, c := range s.tn.conns {
		out += c.ch.fastOut.Load()
		in += c.ch.fastIn.Load()
	}
	return out, in
}

// Close stops the agent: its checks, keepalives and TURN allocations. It
// waits for the Session's goroutines and is idempotent. It must not be
// called from OnPacket or OnPathChange.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.m.removeSession(s)
		s.routeFast(Path{})
		if s.agent != nil {
			if err := s.agent.GracefulClose(); err != nil {
				s.log.Debug("closing agent", "err", err)
			}
		}
		s.wg.Wait()
		s.log.Debug("session closed")
	})
	return nil
}

func (s *Session) isConnected() bool {
	select {
	case <-s.connected:
		return true
	default:
		return false
	}
}

// readLoop hands what pion's Conn receives (non-STUN datagrams on the
// selected pair) to OnPacket, until the agent closes.
func (s *Session) readLoop(conn *pion.Conn) {
	defer s.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		if s.onPacket != nil {
			s.onPacket(buf[:n])
		}
	}
}

func (s *Session) stateChanged(st pion.ConnectionState) {
	s.log.Debug("state", "state", st)
	switch st {
	case pion.ConnectionStateConnected:
		s.stateOnce[1].Do(func() { close(s.connected) })
	case pion.ConnectionStateFailed:
		s.stateOnce[2].Do(func() { close(s.failed) })
		s.setPath(Path{})
	}
}

func (s *Session) pairChanged(local, remote pion.Candidate) {
	p, ok := pathOf(local, remote)
	if !ok {
		s.log.Debug("ignoring selected pair", "local", local, "remote", remote)
		return
	}
	s.setPath(p)
}

// selectedPath returns the agent's selected pair as a Path (without RTT).
func (s *Session) selectedPath() (Path, error) {
	cp, err := s.agent.GetSelectedCandidatePair()
	if err != nil {
		return Path{}, err
	}
	if cp == nil {
		return Path{}, errors.New("connected without a selected candidate pair")
	}
	p, ok := pathOf(cp.Local, cp.Remote)
	if !ok {
		return Path{}, fmt.Errorf("selected candidate pair %s is not UDP", cp)
	}
	return p, nil
}

func pathOf(local, remote pion.Candidate) (Path, bool) {
	l, lok := fromPion(local)
	r, rok := fromPion(remote)
	if !lok || !rok {
		return Path{}, false
	}
	return Path{
		Local: l.Addr, Remote: r.Addr,
		LocalType: l.Type, RemoteType: r.Type,
		Relayed: l.Type == TypeRelay || r.Type == TypeRelay,
	}, true
}

// setPath records the selected path and, once Connect has reported the
// first one, tells OnPathChange about changes.
func (s *Session) setPath(p Path) {
	s.mu.Lock()
	changed := s.path != p
	s.path = p
	f := s.onPathChange
	report := s.reported && changed && f != nil
	s.mu.Unlock()
	if changed {
		s.routeFast(p)
	}
	if changed {
		s.log.Debug("path", "path", p)
	}
	if report {
		if !p.IsZero() {
			p.RTT = s.rtt()
		}
		f(p)
	}
}

func (s *Session) rtt() time.Duration {
	st, ok := s.agent.GetSelectedCandidatePairStats()
	if !ok {
		return 0
	}
	return time.Duration(st.CurrentRoundTripTime * float64(time.Second))
}

// fromPion converts a pion UDP candidate.
func fromPion(c pion.Candidate) (Candidate, bool) {
	if c == nil || !c.NetworkType().IsUDP() {
		return Candidate{}, false
	}
	a, err := netip.ParseAddr(c.Address())
	if err != nil || c.Port() <= 0 || c.Port() > 0xFFFF {
		return Candidate{}, false
	}
	var typ string
	switch c.Type() {
	case pion.CandidateTypeHost:
		typ = TypeHost
	case pion.CandidateTypeServerReflexive:
		typ = TypeSrflx
	case pion.CandidateTypePeerReflexive:
		typ = TypePrflx
	case pion.CandidateTypeRelay:
		typ = TypeRelay
	default:
		return Candidate{}, false
	}
	return Candidate{Type: typ, Addr: netip.AddrPortFrom(a.Unmap(), uint16(c.Port())), Priority: c.Priority()}, true
}

// toPion converts a remote candidate for AddRemoteCandidate.
func toPion(c Candidate) (pion.Candidate, error) {
	addr, port := c.Addr.Addr().String(), int(c.Addr.Port())
	switch c.Type {
	case TypeHost:
		return pion.NewCandidateHost(&pion.CandidateHostConfig{
			Network: "udp", Address: addr, Port: port, Component: pion.ComponentRTP, Priority: c.Priority,
		})
	case TypeSrflx:
		return pion.NewCandidateServerReflexive(&pion.CandidateServerReflexiveConfig{
			Network: "udp", Address: addr, Port: port, Component: pion.ComponentRTP, Priority: c.Priority,
		})
	case TypeRelay:
		return pion.NewCandidateRelay(&pion.CandidateRelayConfig{
			Network: "udp", Address: addr, Port: port, Component: pion.ComponentRTP, Priority: c.Priority,
		})
	}
	return nil, fmt.Errorf("%w: candidate type %q", ErrBadDescription, c.Type)
}
