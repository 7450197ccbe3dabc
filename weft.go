package weft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/dns"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/platform"
	"github.com/weft-net/weft/trust"
	"github.com/weft-net/weft/tunnel"
)

// Defaults for Config fields left zero.
const (
	DefaultMTU       = 1420
	DefaultRecordTTL = time.Hour
	// DefaultLookupCache is Config.LookupCache's zero value.
	DefaultLookupCache = 15 * time.Second
	// DefaultIdleTimeout is Config.IdleTimeout's zero value.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultPort is the UDP port `weft up` listens on when --listen is not
	// given.
	DefaultPort = 41641
)

// Config configures a Node.
type Config struct {
	// StateDir holds the node's keys, genesis, certificate and settings.
	// Empty means DefaultStateDir().
	StateDir string
	// Listen is the UDP address of the node's one socket. The zero value
	// means 0.0.0.0 on a random port.
	Listen netip.AddrPort
	// Endpoints are the addresses advertised in the node record. Nil means
	// the listen address if it names an IP, else every address of every
	// up interface, with the listen port.
	Endpoints []netip.AddrPort
	// Bootstrap are nodes to publish to and look records up from, in
	// addition to those remembered in the state directory.
	Bootstrap []netip.AddrPort
	// TUN names a kernel TUN interface to create (root only): the node's
	// overlay addresses go on it and every program on the host reaches the
	// overlay. Empty means userspace mode (gVisor), which needs no root.
	TUN string
	// DNS is where the overlay DNS server listens. The zero value means: in
	// TUN mode, port 53 of the node's overlay IPv4 address; in userspace
	// mode, no DNS server.
	DNS netip.AddrPort
	// AcceptDNS makes a TUN-mode node point the OS resolver at its DNS
	// server for the network's domain (split DNS), restoring it on Close.
	AcceptDNS bool
	// KeyRotation, if positive, rotates the node's WireGuard key this often
	// (see RotateKey). Zero means only on request (`weft rotate`).
	KeyRotation time.Duration
	// IdleTimeout is how long a peer may carry no application traffic
	// before its tunnel is removed (it is set up again on demand). Zero
	// means DefaultIdleTimeout; negative keeps peers forever.
	IdleTimeout time.Duration
	// MTU of the overlay interface; zero means DefaultMTU.
	MTU int
	// RecordTTL is the lifetime of published node records; zero means
	// DefaultRecordTTL.
	RecordTTL time.Duration
	// RepublishInterval is how often the node signs a fresh record and
	// stores it on the k DHT nodes closest to each of its keys. Zero means
	// a third of RecordTTL.
	RepublishInterval time.Duration
	// LookupCache is how long a record found in the DHT is used without
	// looking it up again: a burst of dials costs one lookup, and a moved
	// peer (new record, higher sequence) is noticed after at most this
	// long. Zero means DefaultLookupCache; negative means every lookup
	// asks the DHT.
	LookupCache time.Duration
	// DHTRole is the node's part in the DHT. DHTRoleServer answers lookups
	// and stores records for others; DHTRoleClient answers nothing and
	// keeps bindings to a few servers (its rendezvous nodes, named in its
	// record). The zero value is DHTRoleAuto: a server if another node can
	// reach the advertised endpoint unsolicited, else a client.
	DHTRole DHTRole
	// DHTReplication is the DHT's k: bucket size and the number of nodes
	// each record is stored on. Zero means dht.DefaultK (20).
	DHTReplication int
	// STUNServers are asked for the node's public address (ICE
	// server-reflexive candidates, `weft netcheck`), besides the bootstrap
	// nodes, which answer STUN too. Nil means the bootstrap nodes only.
	STUNServers []netip.AddrPort
	// TURNServers are external TURN servers (coturn; nat.ParseTURNURL) that
	// relay traffic to peers no direct path reaches (both behind symmetric
	// NAT). Weft relays named in records are found without configuration
	// (they hand out their own credentials); nil means only those.
	TURNServers []nat.TURNURL
	// Relay runs a TURN relay on this node (`weft up --relay`), for
	// admitted members only; its address goes into the node's record.
	Relay bool
	// RelayListen is the relay's UDP and TCP address. The zero value means
	// port nat.DefaultRelayPort (3478) on the listen address's IP. The
	// relay is advertised at this IP if it is a specific one, else at the
	// node's first public endpoint.
	RelayListen netip.AddrPort
	// NoPortMapping turns off asking the default gateway to map the node's
	// UDP port (NAT-PMP, RFC 6886; portmap.go).
	NoPortMapping bool
	// ICEUpgradeAfter is how long a peer stays relayed before this node,
	// if it initiated the path, tries ICE again for a direct one; the wait
	// doubles after each try, up to ten times this. Zero means 30 s (up to
	// 5 min). `weft up` takes it from $WEFT_ICE_UPGRADE_AFTER; tests
	// shorten it.
	ICEUpgradeAfter time.Duration
	// Logger receives the node's logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Node is a running member of a weft network.
type Node struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time

	id       *trust.Identity
	nodeID   addr.NodeID // id's, fixed (n.cert is replaced on renewal)
	genesis  *trust.Genesis
	view     *trust.View // genesis + anchor-set chain + revocations + policy
	netID    addr.NetworkID
	cert     *trust.Certificate
	anchorMu sync.Mutex    // guards anchor, which changes with the anchor set
	anchor   *trust.Anchor // nil unless this node is an anchor

	conn   *nat.Conn
	plane  dataPlane  // userspace stack or kernel TUN
	filter *filter    // policy on the receive path
	demand *demandTUN // the plane's device, watched for on-demand peers
	tun    *tunnel.Tunnel
	store  *dht.Store
	dht    *dht.DHT
	gossip *dht.Gossip // trust statements (trustnode.go)
	// serving is whether the DHT answers requests (DHT server role); a
	// client refuses them.
	serving atomic.Bool
	// reachInconclusive: the last reachability check had nobody to ask;
	// check again sooner.
	reachInconclusive atomic.Bool
	disc              discovery
	nat               *natState   // NAT traversal (ice.go)
	relay             *relayState // the TURN relay (relay.go), or nil

	dns      *dns.Server    // nil without a DNS server
	dnsAddr  netip.AddrPort // where dns listens
	osDNS    *platform.DNS  // OS resolver configuration to undo, or nil
	uapi     net.Listener   // wireguard-go UAPI socket, or nil
	uapiName string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu            sync.Mutex // guards the fields below
	closed        bool
	record        *trust.NodeRecord // our current signed record
	recordRaw     []byte
	endpoints     []netip.AddrPort
	bootAddrs     []netip.AddrPort
	bootPeers     map[netip.AddrPort]dht.Peer    // resolved bootstrap nodes
	bootIDs       map[netip.AddrPort]addr.NodeID // and who they are
	peers         map[addr.NodeID]*peerState
	dialing       map[addr.NodeID]chan struct{} // in-flight connects
	fetched       map[dht.Key]fetchedRecord     // records recently found in the DHT, by key
	rejects       map[string]uint64             // refusals by trust reason
	peersDirty    bool                          // peers changed since savePeers
	savedContacts []netip.AddrPort              // DHT contacts last saved
	contactAddrs  []netip.AddrPort              // DHT contacts of the previous run, seeds of last resort

	// peerCfgMu serializes setPeer with readyPeer's WireGuard peers
	// (ice.go); taken before mu.
	peerCfgMu  sync.Mutex
	stateMu    sync.Mutex // serializes read-modify-write of node.json
	rotateMu   sync.Mutex // one key rotation at a time
	resumeRecs [][]byte   // peers of the previous run, read at start
}

// peerState is a configured WireGuard peer.
type peerState struct {
	act      *activity // last application traffic, shared with demandTUN
	rec      *trust.NodeRecord
	endpoint netip.AddrPort
	reason   string
	since    time.Time
}

// Start loads the membership in cfg.StateDir and brings the node up. It
// returns ErrNotJoined if the directory holds no membership.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir()
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.RecordTTL == 0 {
		cfg.RecordTTL = DefaultRecordTTL
	}
	if cfg.RepublishInterval <= 0 {
		cfg.RepublishInterval = cfg.RecordTTL / 3
	}
	if cfg.LookupCache == 0 {
		cfg.LookupCache = DefaultLookupCache
	}
	switch cfg.DHTRole {
	case "":
		cfg.DHTRole = DHTRoleAuto
	case DHTRoleAuto, DHTRoleServer, DHTRoleClient:
	default:
		return nil, fmt.Errorf("weft start: DHT role %q: use auto, server or client", cfg.DHTRole)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	n := &Node{
		cfg:       cfg,
		logger:    cfg.Logger.With("component", "node"),
		now:       cfg.Now,
		bootPeers: make(map[netip.AddrPort]dht.Peer),
		bootIDs:   make(map[netip.AddrPort]addr.NodeID),
		peers:     make(map[addr.NodeID]*peerState),
		dialing:   make(map[addr.NodeID]chan struct{}),
		fetched:   make(map[dht.Key]fetchedRecord),
		rejects:   make(map[string]uint64),
		filter:    newFilter(),
	}
	n.disc.init(cfg.DHTRole)
	if err := n.loadState(); err != nil {
		return nil, err
	}
	// The context comes first: handlers may start background work as soon
	// as the socket listens.
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.startDataPlane(); err != nil {
		n.cancel()
		n.wg.Wait()
		n.closeDataPlane()
		return nil, err
	}
	if err := n.startDNS(); err != nil {
		n.Close()
		return nil, err
	}
	n.startUAPI()
	if err := n.publishInitial(ctx); err != nil {
		n.Close()
		return nil, err
	}
	n.wg.Add(2)
	go n.maintain()
	resumed := make(chan struct{})
	go func() {
		defer n.wg.Done()
		n.resume(n.resumeRecs)
		close(resumed)
	}()
	// Give previous peers a moment to learn the new session, so the first
	// packets after a restart are not lost; peers that are down do not
	// hold Start up for long.
	select {
	case <-resumed:
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
	}
	n.logger.Info("node up", "name", n.cert.Name, "node_id", n.cert.NodeID.Short(),
		"ipv4", n.cert.IPv4, "ipv6", n.cert.IPv6(), "listen", n.conn.LocalAddr(), "anchor", n.anchorState() != nil)
	return n, nil
}

func (n *Node) loadState() error {
	dir := n.cfg.StateDir
	g, err := trust.LoadGenesis(dir)
	if err != nil {
		if isNotExist(err) {
			return ErrNotJoined
		}
		return fmt.Errorf("load genesis: %w", err)
	}
	id, err := trust.LoadIdentity(dir)
	if err != nil {
		return fmt.Errorf("load identity: %w", err)
	}
	cert, err := trust.LoadCertificate(dir)
	if err != nil {
		if isNotExist(err) {
			return ErrNotJoined
		}
		return fmt.Errorf("load certificate: %w", err)
	}
	view, err := trust.LoadView(dir)
	if err != nil {
		return fmt.Errorf("load trust state: %w", err)
	}
	now := n.now()
	if err := view.VerifyCertificate(cert, now); err != nil {
		return fmt.Errorf("this node's certificate is not valid: %w", err)
	}
	if cert.NodeID != id.NodeID() {
		return fmt.Errorf("the certificate in %s belongs to another identity: join again with `weft join TOKEN`", dir)
	}
	n.id, n.genesis, n.netID, n.cert, n.view = id, g, g.ID(), cert, view
	n.nodeID = id.NodeID()
	if view.IsAnchor(id.SignPublic()) {
		if err := n.openAnchor(); err != nil {
			return err
		}
	}
	st, err := loadNodeState(dir)
	if err != nil {
		return err
	}
	n.bootAddrs = mergeAddrPorts(append([]netip.AddrPort(nil), st.Bootstrap...), n.cfg.Bootstrap...)
	// The anchors of the current set are bootstrap nodes too: anchors join
	// nothing and would otherwise not know each other, and every member
	// reaches the network through them.
	for _, a := range view.Set().Anchors {
		if a.NodeID() != id.NodeID() {
			n.bootAddrs = mergeAddrPorts(n.bootAddrs, a.Endpoints...)
		}
	}
	n.resumeRecs = st.Peers
	n.contactAddrs = st.Contacts
	return nil
}

func (n *Node) startDataPlane() error {
	var err error
	n.conn, err = nat.Listen(nat.Config{
		Addr:       n.cfg.Listen,
		PrivateKey: n.id.WG,
		Logger:     n.cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("listen UDP %s: %w", n.cfg.Listen, err)
	}
	n.plane, err = n.newDataPlane()
	if err != nil {
		return err
	}
	n.demand = newDemandTUN(n.plane.Device(), n)
	n.mu.Lock()
	n.updatePolicyLocked() // a policy may already be in force from the saved view
	n.mu.Unlock()
	n.tun, err = tunnel.New(tunnel.Config{
		Bind:       n.conn.Bind(),
		TUN:        n.demand,
		PrivateKey: tunnel.Key(n.id.WG),
		Logger:     n.cfg.Logger,
	})
	if err != nil {
		return err
	}
	n.store, err = dht.NewStore(dht.StoreOptions{
		Validator: validator{n},
		Now:       n.now,
		Logger:    n.cfg.Logger,
	})
	if err != nil {
		return err
	}
	if err := n.startDHT(); err != nil {
		return err
	}
	n.conn.Handle(nat.MsgHello, n.handleHello)
	n.conn.Handle(nat.MsgConnect, n.handleConnect)
	n.conn.Handle(msgStatement, n.handleStatement)
	n.conn.Handle(msgTrustSync, n.handleTrustSync)
	n.conn.Handle(msgReachCheck, n.handleReachCheck)
	n.conn.Handle(msgReachProbe, n.handleReachProbe)
	n.conn.Handle(msgReachPing, n.handleReachPing)
	if n.anchorState() != nil {
		n.conn.Handle(nat.MsgJoin, n.handleJoin)
		n.conn.Handle(msgRenew, n.handleRenew)
	}
	n.endpoints = n.cfg.Endpoints
	if len(n.endpoints) == 0 {
		n.endpoints = advertiseEndpoints(n.conn.LocalAddr())
	}
	return n.startNAT()
}

// closeDataPlane closes whatever startDataPlane created, in reverse order.
func (n *Node) closeDataPlane() {
	n.closeNAT()
	if n.gossip != nil {
		n.gossip.Close()
	}
	if n.dht != nil {
		n.dht.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
	if n.tun != nil {
		n.tun.Close() // closes the Bind and the netstack device
	}
	if n.plane != nil {
		n.plane.Close()
	}
	if n.conn != nil {
		n.conn.Close()
	}
}

// Close takes the node down: tunnels, stack, socket and background work. It
// is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	if n.osDNS != nil {
		if err := n.osDNS.Close(); err != nil {
			n.logger.Warn("could not restore the OS resolver configuration", "err", err)
		}
	}
	if n.dns != nil {
		n.dns.Close()
	}
	if n.uapi != nil {
		path := n.uapi.Addr().String()
		n.uapi.Close()
		// The listener does not unlink its socket; a stale one would make
		// `wg show` list a node that is gone.
		if strings.HasSuffix(path, ".sock") {
			os.Remove(path)
		}
	}
	n.wg.Wait()
	n.savePeers()
	n.closeDataPlane()
	if a := n.anchorState(); a != nil {
		a.Close()
	}
	return nil
}

// goBackground runs f in a goroutine owned by the node, with a context
// cancelled by Close; it reports false (and runs nothing) after Close.
func (n *Node) goBackground(f func(ctx context.Context)) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f(n.ctx)
	}()
	return true
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// Dial connects to address inside the overlay. network is "tcp", "tcp4",
// "tcp6", "udp", "udp4" or "udp6"; the host of address is an overlay name
// ("api" or "api.<domain>"), "<nodeid>.id.<domain>", or an overlay IP.
func (n *Node) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	if n.isClosed() {
		return nil, ErrClosed
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("weft dial %s: %w", address, err)
	}
	port, err := parsePort(portStr)
	if err != nil {
		return nil, fmt.Errorf("weft dial %s: %w", address, err)
	}
	p, err := n.Resolve(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("weft dial %s: %w", address, err)
	}
	ip := p.IPv4
	switch network {
	case "tcp6", "udp6":
		ip = p.IPv6
	case "tcp", "udp":
		if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
			ip = p.IPv6
		}
	case "tcp4", "udp4":
	default:
		return nil, fmt.Errorf("weft dial %s: unsupported network %q (use tcp or udp)", address, network)
	}
	if p.NodeID != n.cert.NodeID {
		if err := n.connectPeer(ctx, p.rec); err != nil {
			return nil, fmt.Errorf("weft dial %s: %w", address, err)
		}
	}
	base := "tcp"
	if network[:3] == "udp" {
		base = "udp"
	}
	c, err := n.plane.DialContext(ctx, base, netip.AddrPortFrom(ip, port))
	if err != nil {
		return nil, fmt.Errorf("weft dial %s (%s): %w", address, netip.AddrPortFrom(ip, port), err)
	}
	return c, nil
}

// Listen listens for TCP connections from the overlay. address is ":PORT" (all
// of the node's overlay addresses) or "IP:PORT" with one of them.
func (n *Node) Listen(network, address string) (net.Listener, error) {
	ap, err := n.localAddrPort(network, address, "tcp")
	if err != nil {
		return nil, err
	}
	return n.plane.ListenTCP(ap)
}

// ListenPacket listens for UDP datagrams from the overlay; address as for
// Listen.
func (n *Node) ListenPacket(network, address string) (net.PacketConn, error) {
	ap, err := n.localAddrPort(network, address, "udp")
	if err != nil {
		return nil, err
	}
	return n.plane.ListenUDP(ap)
}

func (n *Node) localAddrPort(network, address, base string) (netip.AddrPort, error) {
	if n.isClosed() {
		return netip.AddrPort{}, ErrClosed
	}
	switch network {
	case base, base + "4", base + "6":
	default:
		return netip.AddrPort{}, fmt.Errorf("weft listen: unsupported network %q (use %s)", network, base)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("weft listen %s: %w", address, err)
	}
	port, err := parsePort(portStr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("weft listen %s: %w", address, err)
	}
	if host == "" {
		return netip.AddrPortFrom(netip.Addr{}, port), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || (ip != n.cert.IPv4 && ip != n.cert.IPv6()) {
		return netip.AddrPort{}, fmt.Errorf("weft listen %s: host must be empty or one of this node's overlay addresses (%s, %s)", address, n.cert.IPv4, n.cert.IPv6())
	}
	return netip.AddrPortFrom(ip, port), nil
}

func parsePort(s string) (uint16, error) {
	var p uint64
	if s == "" {
		return 0, errors.New("missing port")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("invalid port %q", s)
		}
		p = p*10 + uint64(c-'0')
		if p > 65535 {
			return 0, fmt.Errorf("port %s out of range", s)
		}
	}
	return uint16(p), nil
}

// Identity facts, for callers that need them.

// NodeID returns the node's ID.
func (n *Node) NodeID() addr.NodeID { return n.cert.NodeID }

// Name returns the node's name in the overlay.
func (n *Node) Name() string { return n.cert.Name }

// Addrs returns the node's overlay IPv4 and IPv6 addresses.
func (n *Node) Addrs() (v4, v6 netip.Addr) { return n.cert.IPv4, n.cert.IPv6() }

// Domain returns the network's DNS domain.
func (n *Node) Domain() string { return n.genesis.Domain }

// anchorState returns the node's anchor state, nil if it is not an anchor.
func (n *Node) anchorState() *trust.Anchor {
	n.anchorMu.Lock()
	defer n.anchorMu.Unlock()
	return n.anchor
}

// WGPublicKey returns the node's current WireGuard public key.
func (n *Node) WGPublicKey() [32]byte {
	n.rotateMu.Lock()
	defer n.rotateMu.Unlock()
	return n.id.WGPublic()
}

// LocalAddr returns the address of the node's UDP socket.
func (n *Node) LocalAddr() netip.AddrPort { return n.conn.LocalAddr() }
