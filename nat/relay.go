package nat

// The relay: a TURN server (RFC 8656, pion/turn) that a node runs with
// `weft up --relay`, for the members that no direct path can join (a
// symmetric NAT on both sides, or UDP blocked).
//
// It listens on a port of its own, not on the node's shared socket: a TURN
// server reads its listening socket and one socket per allocation itself,
// and keys allocations by the client's 5-tuple. By default it serves TURN
// over UDP and over TCP on the same port, so nodes whose network blocks
// UDP can still relay (the relayed side is always UDP, toward WireGuard
// peers).
//
// Only members allocate. There is no shared password: a member asks the
// relay's node for credentials with a sealed control message
// (MsgRelayCreds, relaycreds.go), whose sender key the box authenticates;
// RelayConfig.Authorize (package weft's certificate check) decides. The
// answer is a TURN REST style ephemeral credential (the scheme of
// draft-uberti-behave-turn-rest, which coturn calls use-auth-secret):
//
//	username = EXPIRY ":" KEYID     EXPIRY: Unix seconds, KEYID: hex of the first 16 bytes of the node key
//	password = base64url(HMAC-SHA256(secret, "weft-turn-v1\x00" username))
//
// The relay keeps no per-credential state: its AuthHandler recomputes the
// password from the username and refuses usernames that are malformed or
// past EXPIRY. The format is private to one relay (it issues and checks
// its own credentials), so it can change without a protocol version. KEYID
// is the TURN user ID: allocation quotas and bandwidth caps apply per node,
// whichever credential it uses, and a node may refresh an allocation with
// a newer credential. Expiry also bounds revocation: a node that loses
// Authorize keeps relaying until its credential expires, then until the
// allocation's lifetime (10 minutes) runs out, because refreshes fail.
//
// Quotas: at most RelayConfig.MaxUserAllocations allocations per node
// (refused with 486 Allocation Quota Reached) and MaxAllocations in all
// (508 Insufficient Capacity). Optional bandwidth caps drop relayed
// datagrams beyond a byte rate, per node and in total. Peers (the far side
// of allocations) must pass RelayConfig.AllowPeer: by default anything but
// loopback, link-local, multicast and unspecified addresses, so a relay
// cannot be used to reach services on its own host's loopback.

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/turn/v5"

	"github.com/weft-net/weft/nat/internal/pionlog"
	"github.com/weft-net/weft/nat/internal/udpbatch"
)

// DefaultRelayPort is the TURN port (RFC 8656), used when
// RelayConfig.Listen is the zero value.
const DefaultRelayPort = 3478

const (
	defaultRelayRealm         = "weft"
	defaultCredentialTTL      = 12 * time.Hour
	maxCredentialTTL          = 7 * 24 * time.Hour
	defaultMaxAllocations     = 1024
	defaultMaxUserAllocations = 64

	relayKeyIDBytes  = 16 // bytes of the node key in a username
	relaySecretBytes = 32 // random secret when RelayConfig.Secret is nil
	minRelaySecret   = 16
	relayHMACContext = "weft-turn-v1\x00"

	// relayCloseWait bounds how long Close waits for pion to close the
	// allocations after the listeners are gone.
	relayCloseWait = 2 * time.Second

	// relayTCPIdle closes a TURN-over-TCP connection that has sent nothing
	// for this long. Clients refresh permissions every few minutes (they
	// last 5), so a live client is never idle this long.
	relayTCPIdle = 10 * time.Minute

	// relaySocketBuffer is the receive buffer asked for an allocation's
	// socket: a WireGuard burst from a peer queues here.
	relaySocketBuffer = 1 << 20
)

// RelayConfig configures NewRelay.
type RelayConfig struct {
	// Listen is the address the TURN server listens on, UDP and (unless
	// UDPOnly) TCP on the same port. The zero value means 0.0.0.0:3478. A
	// zero port picks a random one that is free for both.
	Listen netip.AddrPort

	// UDPOnly turns off TURN over TCP. By default the server also accepts
	// TURN over TCP on Listen's port, for nodes whose network blocks UDP
	// (the relayed side is UDP either way).
	UDPOnly bool

	// PublicIP is the address peers reach the relay at: it goes into
	// XOR-RELAYED-ADDRESS and into the URLs of issued credentials. The
	// zero value means Listen's address, which must then not be a wildcard.
	// Allocations are of PublicIP's family only.
	PublicIP netip.Addr

	// Realm is the TURN realm. Empty means "weft".
	Realm string

	// Authorize reports whether a node may have credentials. The node's
	// key is authenticated by the sealed control message it asked with;
	// its address is not. It must be set (package weft checks the node's
	// membership certificate) and should be quick: it runs on a control
	// handler goroutine.
	Authorize func(Peer) bool

	// Secret keys the credentials' HMAC. Nil means a random secret, so
	// credentials do not survive a restart (nodes ask again). If set, it
	// must be at least 16 bytes; relays sharing a secret (and Realm) accept
	// each other's credentials.
	Secret []byte

	// CredentialTTL is how long issued credentials are valid. Zero means
	// 12 hours; at most 7 days.
	CredentialTTL time.Duration

	// MaxAllocations bounds the allocations of all nodes together. Zero
	// means 1024.
	MaxAllocations int

	// MaxUserAllocations bounds one node's allocations (an ICE session
	// that relays holds one). Zero means 64.
	MaxUserAllocations int

	// MaxBandwidth caps the bytes per second relayed in total, both
	// directions together; datagrams beyond it are dropped. Zero means no
	// cap.
	MaxBandwidth int64

	// MaxUserBandwidth caps the bytes per second relayed for one node, as
	// MaxBandwidth does. Zero means no cap.
	MaxUserBandwidth int64

	// AllowPeer reports whether allocations may send to and receive from
	// a peer address (TURN permissions and channel bindings). Nil means
	// any address except loopback, unspecified, multicast, broadcast and
	// link-local ones.
	AllowPeer func(netip.Addr) bool

	// ListenPacket opens allocations' sockets ("udp4" or "udp6", an
	// IP:PORT address). Nil means net.ListenPacket. (Tests pass one that
	// opens sockets inside a network namespace.)
	ListenPacket func(network, address string) (net.PacketConn, error)

	// Logger receives diagnostics, with "component"="relay". Nil discards
	// them.
	Logger *slog.Logger

	// Now is the clock credentials are issued and checked by. Nil means
	// time.Now.
	Now func() time.Time
}

// RelayStats is a snapshot of a Relay's counters, since NewRelay.
type RelayStats struct {
	Allocations      int    // allocations now
	AllocationsTotal uint64 // allocations made

	CredentialsIssued  uint64 // credentials handed out (MsgRelayCreds and Credentials)
	CredentialsRefused uint64 // MsgRelayCreds requests Authorize refused

	AuthFailures       uint64 // TURN requests with malformed, expired or forged credentials
	QuotaRefused       uint64 // allocations refused by MaxUserAllocations or MaxAllocations
	PermissionsRefused uint64 // permissions and channel bindings refused by AllowPeer

	PacketsToPeers   uint64 // datagrams relayed from clients to peers
	BytesToPeers     uint64
	PacketsFromPeers uint64 // datagrams relayed from peers to clients
	BytesFromPeers   uint64
	BandwidthDropped uint64 // datagrams dropped by MaxBandwidth or MaxUserBandwidth
}

type relayCounters struct {
	allocsTotal, credsIssued, credsRefused          atomic.Uint64
	authFailures, quotaRefused, permsRefused        atomic.Uint64
	pktsTo, bytesTo, pktsFrom, bytesFrom, bwDropped atomic.Uint64
}

// Relay is a TURN server that only authorized nodes may allocate on. Serve
// its credentials on the node's Conn with Conn.ServeRelay. Its methods are
// safe for concurrent use.
type Relay struct {
	log      *slog.Logger
	realm    string
	secret   []byte
	ttl      time.Duration
	now      func() time.Time
	auth     func(Peer) bool
	allow    func(netip.Addr) bool
	listenPC func(network, address string) (net.PacketConn, error)
	maxAll   int
	maxUser  int
	userBW   int64
	public   netip.Addr // advertised relay address
	bindIP   netip.Addr // relay sockets bind here
	local    netip.AddrPort
	tcp      bool
	server   *turn.Server
	tcpLn    *relayListener // nil with UDPOnly
	totalBW  *byteBucket    // nil: no cap
	stats    relayCounters
	closed   atomic.Bool
	closeMu  sync.Once
	closeErr error

	mu     sync.Mutex // guards users, allocs
	users  map[string]*relayUser
	allocs int
}

// relayUser is one node's share of the relay, while it has allocations.
type relayUser struct {
	id     string
	allocs int
	bw     *byteBucket // nil: no cap
}

// NewRelay starts a TURN server. Close it to stop.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Authorize == nil {
		return nil, errors.New("nat relay: RelayConfig.Authorize is nil; pass the check that admits members")
	}
	listen := unmapAddrPort(cfg.Listen)
	if !cfg.Listen.IsValid() {
		listen = netip.AddrPortFrom(netip.IPv4Unspecified(), DefaultRelayPort)
	}
	public := cfg.PublicIP.Unmap()
	if !public.IsValid() {
		if listen.Addr().IsUnspecified() {
			return nil, fmt.Errorf("nat relay: listening on %s, a wildcard address: set RelayConfig.PublicIP to the address peers reach this host at", listen)
		}
		public = listen.Addr()
	}
	if public.IsUnspecified() || public.IsMulticast() || public.Zone() != "" {
		return nil, fmt.Errorf("nat relay: RelayConfig.PublicIP %s is not a unicast address", public)
	}
	bindIP := listen.Addr()
	switch {
	case bindIP.IsUnspecified() && public.Is4():
		bindIP = netip.IPv4Unspecified()
	case bindIP.IsUnspecified():
		bindIP = netip.IPv6Unspecified()
	case bindIP.Is4() != public.Is4():
		return nil, fmt.Errorf("nat relay: Listen %s and PublicIP %s are of different address families", listen, public)
	}
	ttl := cfg.CredentialTTL
	if ttl == 0 {
		ttl = defaultCredentialTTL
	}
	if ttl < time.Second || ttl > maxCredentialTTL {
		return nil, fmt.Errorf("nat relay: RelayConfig.CredentialTTL %v out of range (1s to %v)", ttl, maxCredentialTTL)
	}
	secret := cfg.Secret
	if secret == nil {
		secret = make([]byte, relaySecretBytes)
		rand.Read(secret)
	} else if len(secret) < minRelaySecret {
		return nil, fmt.Errorf("nat relay: RelayConfig.Secret is %d bytes, want at least %d", len(secret), minRelaySecret)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Relay{
		log:      log.With("component", "relay"),
		realm:    cmp.Or(cfg.Realm, defaultRelayRealm),
		secret:   append([]byte(nil), secret...),
		ttl:      ttl,
		now:      cfg.Now,
		auth:     cfg.Authorize,
		allow:    cfg.AllowPeer,
		listenPC: cfg.ListenPacket,
		maxAll:   cfg.MaxAllocations,
		maxUser:  cfg.MaxUserAllocations,
		userBW:   cfg.MaxUserBandwidth,
		public:   public,
		bindIP:   bindIP,
		tcp:      !cfg.UDPOnly,
		totalBW:  newByteBucket(cfg.MaxBandwidth),
		users:    make(map[string]*relayUser),
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.allow == nil {
		r.allow = defaultAllowPeer
	}
	if r.listenPC == nil {
		r.listenPC = net.ListenPacket
	}
	if r.maxAll <= 0 {
		r.maxAll = defaultMaxAllocations
	}
	if r.maxUser <= 0 {
		r.maxUser = defaultMaxUserAllocations
	}

	udp, ln, err := listenRelay(listen, r.tcp)
	if err != nil {
		return nil, fmt.Errorf("nat relay listen %s: %w", listen, err)
	}
	r.local = unmapAddrPort(udp.LocalAddr().(*net.UDPAddr).AddrPort())
	// pion reads and writes one datagram at a time: batch them.
	bpc := udpbatch.New(udp)
	gen := &relayAddrGen{r: r}
	scfg := turn.ServerConfig{
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            bpc,
			RelayAddressGenerator: gen,
			PermissionHandler:     r.permit,
		}},
		LoggerFactory: pionlog.Factory{Log: r.log},
		Realm:         r.realm,
		AuthHandler:   r.authenticate,
		QuotaHandler:  r.quota,
		EventHandler: turn.EventHandler{
			OnAuth: func(src, _ net.Addr, proto, username, _, method string, ok bool) {
				if !ok {
					r.stats.authFailures.Add(1)
					r.log.Debug("relay request refused: wrong password", "client", src, "proto", proto, "user", username, "method", method)
				}
			},
			OnAllocationCreated: func(src, _ net.Addr, proto, userID, _ string, relayAddr net.Addr, _ int) {
				r.stats.allocsTotal.Add(1)
				r.log.Debug("relay allocation", "client", src, "proto", proto, "node", userID, "relayed", relayAddr)
			},
			OnAllocationDeleted: func(src, _ net.Addr, proto, userID, _ string) {
				r.log.Debug("relay allocation gone", "client", src, "proto", proto, "node", userID)
			},
		},
	}
	if ln != nil {
		r.tcpLn = &relayListener{Listener: ln, conns: make(map[*relayTCPConn]struct{}), max: 2 * r.maxAll}
		scfg.ListenerConfigs = []turn.ListenerConfig{{
			Listener:              r.tcpLn,
			RelayAddressGenerator: gen,
			PermissionHandler:     r.permit,
		}}
	}
	r.server, err = turn.NewServer(scfg)
	if err != nil {
		bpc.Close()
		if ln != nil {
			ln.Close()
		}
		return nil, fmt.Errorf("nat relay: %w", err)
	}
	r.log.Info("relay listening", "addr", r.local, "public", r.Addr(), "tcp", r.tcp, "realm", r.realm)
	return r, nil
}

// listenRelay opens the UDP socket and, if tcp, a TCP listener on the same
// port. With port zero it retries a few random ports until both are free.
func listenRelay(ap netip.AddrPort, tcp bool) (*net.UDPConn, net.Listener, error) {
	network := "udp4"
	if ap.Addr().Is6() {
		network = "udp6"
	}
	var lastErr error
	for range 8 {
		udp, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, nil, err
		}
		// Best effort, as for the shared socket: one reader serves every
		// client, so bursts queue here.
		udp.SetReadBuffer(socketBufferSize)
		udp.SetWriteBuffer(socketBufferSize)
		if !tcp {
			return udp, nil, nil
		}
		port := udp.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.ListenTCP("tcp"+network[3:], &net.TCPAddr{IP: ap.Addr().AsSlice(), Port: port})
		if err == nil {
			return udp, ln, nil
		}
		udp.Close()
		if ap.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("TCP on the same port: %w", err)
		}
		lastErr = err
	}
	return nil, nil, fmt.Errorf("no port free for both UDP and TCP: %w", lastErr)
}

// defaultAllowPeer refuses peer addresses a relay must not reach for its
// clients.
func defaultAllowPeer(a netip.Addr) bool {
	return a.IsValid() && !a.IsLoopback() && !a.IsUnspecified() && !a.IsMulticast() &&
		!a.IsLinkLocalUnicast() && !a.IsLinkLocalMulticast() && !a.IsInterfaceLocalMulticast() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// LocalAddr returns the address the TURN server's socket is bound to.
func (r *Relay) LocalAddr() netip.AddrPort { return r.local }

// Addr returns the TURN server's address as clients reach it: PublicIP and
// the listening port.
func (r *Relay) Addr() netip.AddrPort { return netip.AddrPortFrom(r.public, r.local.Port()) }

// Realm returns the TURN realm.
func (r *Relay) Realm() string { return r.realm }

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() RelayStats {
	r.mu.Lock()
	allocs := r.allocs
	r.mu.Unlock()
	s := &r.stats
	return RelayStats{
		Allocations:        allocs,
		AllocationsTotal:   s.allocsTotal.Load(),
		CredentialsIssued:  s.credsIssued.Load(),
		CredentialsRefused: s.credsRefused.Load(),
		AuthFailures:       s.authFailures.Load(),
		QuotaRefused:       s.quotaRefused.Load(),
		PermissionsRefused: s.permsRefused.Load(),
		PacketsToPeers:     s.pktsTo.Load(),
		BytesToPeers:       s.bytesTo.Load(),
		PacketsFromPeers:   s.pktsFrom.Load(),
		BytesFromPeers:     s.bytesFrom.Load(),
		BandwidthDropped:   s.bwDropped.Load(),
	}
}

// Credentials issues credentials for the node with public key key without
// asking Authorize: for the relay's own node, or a caller that has checked
// the node itself. Members get theirs with Conn.RelayCredentials.
func (r *Relay) Credentials(key [32]byte) (RelayCreds, error) {
	if r.closed.Load() {
		return RelayCreds{}, ErrRelayClosed
	}
	user, pass, ttl := r.issue(&key)
	tcpPort := uint16(0)
	if r.tcp {
		tcpPort = r.local.Port()
	}
	return newRelayCreds(r.public, r.local.Port(), tcpPort, user, pass, r.now().Add(ttl)), nil
}

// issue makes a credential for key, valid for the relay's TTL.
func (r *Relay) issue(key *[32]byte) (user, pass string, ttl time.Duration) {
	now := r.now()
	exp := now.Add(r.ttl).Unix()
	user = strconv.FormatInt(exp, 10) + ":" + hex.EncodeToString(key[:relayKeyIDBytes])
	r.stats.credsIssued.Add(1)
	return user, r.password(user), time.Unix(exp, 0).Sub(now)
}

// password is the password of a username.
func (r *Relay) password(user string) string {
	m := hmac.New(sha256.New, r.secret)
	m.Write([]byte(relayHMACContext))
	m.Write([]byte(user))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// parseRelayUsername splits a username made by issue into its expiry
// (Unix seconds) and key ID. It accepts only the canonical form.
func parseRelayUsername(user string) (exp int64, keyID string, ok bool) {
	es, keyID, found := strings.Cut(user, ":")
	if !found || len(es) == 0 || len(es) > 12 || len(keyID) != 2*relayKeyIDBytes {
		return 0, "", false
	}
	exp, err := strconv.ParseInt(es, 10, 64)
	if err != nil || exp <= 0 || strconv.FormatInt(exp, 10) != es {
		return 0, "", false
	}
	for _, c := range []byte(keyID) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return 0, "", false
		}
	}
	return exp, keyID, true
}

// authenticate is the pion AuthHandler: it recomputes the password of a
// well-formed, unexpired username and returns the node's key ID as the
// TURN user ID.
func (r *Relay) authenticate(ra *turn.RequestAttributes) (userID string, key []byte, ok bool) {
	refuse := func(why string) (string, []byte, bool) {
		r.stats.authFailures.Add(1)
		r.log.Debug("relay request refused", "client", ra.SrcAddr, "user", ra.Username, "method", ra.Method, "why", why)
		return "", nil, false
	}
	if ra.Realm != r.realm {
		return refuse(fmt.Sprintf("realm %q, want %q", ra.Realm, r.realm))
	}
	exp, id, ok := parseRelayUsername(ra.Username)
	if !ok {
		return refuse("malformed username")
	}
	if !r.now().Before(time.Unix(exp, 0)) {
		return refuse("credentials expired")
	}
	return id, turn.GenerateAuthKey(ra.Username, r.realm, r.password(ra.Username)), true
}

// quota is the pion QuotaHandler: a node at MaxUserAllocations gets 486.
// (relayAddrGen.reserve enforces both limits again, atomically.)
func (r *Relay) quota(userID, _ string, src net.Addr) bool {
	r.mu.Lock()
	u := r.users[userID]
	ok := u == nil || u.allocs < r.maxUser
	r.mu.Unlock()
	if !ok {
		r.stats.quotaRefused.Add(1)
		r.log.Debug("relay allocation refused: node at its quota", "client", src, "node", userID, "limit", r.maxUser)
	}
	return ok
}

// permit is the pion PermissionHandler.
func (r *Relay) permit(client net.Addr, peerIP net.IP) bool {
	a, _ := netip.AddrFromSlice(peerIP)
	if r.allow(a.Unmap()) {
		return true
	}
	r.stats.permsRefused.Add(1)
	r.log.Debug("relay permission refused", "client", client, "peer", a)
	return false
}

var (
	errRelayUserQuota = errors.New("node at its allocation quota")
	errRelayFull      = errors.New("relay at its allocation limit")
)

// reserve counts a new allocation for userID, within the quotas.
func (r *Relay) reserve(userID string) (*relayUser, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil, ErrRelayClosed
	}
	u := r.users[userID]
	switch {
	case r.allocs >= r.maxAll:
		r.stats.quotaRefused.Add(1)
		r.log.Warn("relay allocation refused: relay full", "node", userID, "limit", r.maxAll)
		return nil, errRelayFull
	case u != nil && u.allocs >= r.maxUser:
		r.stats.quotaRefused.Add(1)
		return nil, errRelayUserQuota
	case u == nil:
		u = &relayUser{id: userID, bw: newByteBucket(r.userBW)}
		r.users[userID] = u
	}
	u.allocs++
	r.allocs++
	return u, nil
}

// release undoes reserve when an allocation's socket closes.
func (r *Relay) release(u *relayUser) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u.allocs--
	r.allocs--
	if u.allocs == 0 {
		delete(r.users, u.id)
	}
}

// Close stops the TURN server: it closes its sockets and every allocation
// and TCP connection, and waits (briefly) for the allocations to go. It
// is idempotent; later calls return nil.
func (r *Relay) Close() error {
	first := false
	r.closeMu.Do(func() {
		first = true
		r.closed.Store(true)
		r.closeErr = r.server.Close()
		if r.tcpLn != nil {
			r.tcpLn.closeAll()
		}
		deadline := time.Now().Add(relayCloseWait)
		for r.Stats().Allocations > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		r.log.Debug("relay closed", "addr", r.local)
	})
	if !first {
		return nil
	}
	return r.closeErr
}

// relayAddrGen is the pion RelayAddressGenerator: it opens allocations'
// UDP sockets, counts them against the quotas and wraps them for the
// bandwidth caps and statistics. TCP allocations (RFC 6062) are refused:
// WireGuard peers are UDP.
type relayAddrGen struct{ r *Relay }

var _ turn.RelayAddressGenerator = (*relayAddrGen)(nil)

var errRelayTCPAllocation = errors.New("TCP allocations are not supported")

func (g *relayAddrGen) Validate() error { return nil }

func (g *relayAddrGen) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	r := g.r
	if (conf.Network == "udp6") != r.public.Is6() {
		return nil, nil, fmt.Errorf("relay has no %s address", conf.Network)
	}
	u, err := r.reserve(conf.UserID)
	if err != nil {
		return nil, nil, err
	}
	pc, err := r.listenPC(conf.Network, netip.AddrPortFrom(r.bindIP, uint16(conf.RequestedPort)).String())
	if err != nil {
		r.release(u)
		return nil, nil, err
	}
	la, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		pc.Close()
		r.release(u)
		return nil, nil, fmt.Errorf("relay socket is %T, not UDP", pc.LocalAddr())
	}
	if b, ok := pc.(interface{ SetReadBuffer(int) error }); ok {
		b.SetReadBuffer(relaySocketBuffer) // best effort
	}
	if udp, ok := pc.(*net.UDPConn); ok {
		pc = udpbatch.New(udp) // batched reads and writes, as on the listener
	}
	port := la.Port
	return &relayConn{PacketConn: pc, r: r, u: u}, &net.UDPAddr{IP: r.public.AsSlice(), Port: port}, nil
}

func (g *relayAddrGen) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errRelayTCPAllocation
}

func (g *relayAddrGen) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errRelayTCPAllocation
}

// relayConn is an allocation's relayed socket: reads are datagrams from
// peers to the client, writes datagrams from the client to peers.
type relayConn struct {
	net.PacketConn
	r    *Relay
	u    *relayUser
	once sync.Once
}

func (c *relayConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, from, err
		}
		if !c.allow(n) {
			continue
		}
		c.r.stats.pktsFrom.Add(1)
		c.r.stats.bytesFrom.Add(uint64(n))
		return n, from, nil
	}
}

func (c *relayConn) WriteTo(b []byte, to net.Addr) (int, error) {
	if !c.allow(len(b)) {
		return len(b), nil // dropped, as a congested link would
	}
	n, err := c.PacketConn.WriteTo(b, to)
	if err == nil {
		c.r.stats.pktsTo.Add(1)
		c.r.stats.bytesTo.Add(uint64(n))
	}
	return n, err
}

// allow charges n bytes to the bandwidth caps.
func (c *relayConn) allow(n int) bool {
	now := time.Now()
	if c.u.bw.take(n, now) && c.r.totalBW.take(n, now) {
		return true
	}
	c.r.stats.bwDropped.Add(1)
	return false
}

func (c *relayConn) Close() error {
	err := c.PacketConn.Close()
	c.once.Do(func() { c.r.release(c.u) })
	return err
}

// byteBucket is a token bucket of bytes. A nil *byteBucket allows
// everything.
type byteBucket struct {
	rate, burst float64

	mu     sync.Mutex // guards tokens, last
	tokens float64
	last   time.Time
}

// newByteBucket returns a bucket refilling at rate bytes per second with
// room for a quarter second (and at least 64 KiB), or nil if rate <= 0.
func newByteBucket(rate int64) *byteBucket {
	if rate <= 0 {
		return nil
	}
	burst := max(float64(rate)/4, 64<<10)
	return &byteBucket{rate: float64(rate), burst: burst, tokens: burst}
}

// take takes n bytes, reporting whether there were enough.
func (b *byteBucket) take(n int, now time.Time) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(b.burst, b.tokens+dt*b.rate)
		b.last = now
	}
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// relayListener is the TURN-over-TCP listener. pion serves each accepted
// connection until it fails and does not close them when the listener
// closes, so the listener tracks them for Relay.Close, and bounds their
// number and idle time (a connection needs no credentials to stay open).
type relayListener struct {
	net.Listener
	max int

	mu     sync.Mutex // guards conns, closed
	conns  map[*relayTCPConn]struct{}
	closed bool
}

func (l *relayListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &relayTCPConn{Conn: c, l: l}
		l.mu.Lock()
		ok := !l.closed && len(l.conns) < l.max
		if ok {
			l.conns[tc] = struct{}{}
		}
		l.mu.Unlock()
		if ok {
			return tc, nil
		}
		c.Close()
	}
}

// closeAll closes every accepted connection; later ones are refused.
func (l *relayListener) closeAll() {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

type relayTCPConn struct {
	net.Conn
	l *relayListener
}

func (c *relayTCPConn) Read(b []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(relayTCPIdle))
	return c.Conn.Read(b)
}

func (c *relayTCPConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}
