package dns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-net/weft/addr"
)

// Defaults for the zero values of Config.
const (
	// DefaultTTL is the TTL of an overlay answer whose Answer.TTL is zero.
	DefaultTTL = 30 * time.Second
	// DefaultMaxTTL caps overlay TTLs, so that revocations and changed
	// records propagate within it.
	DefaultMaxTTL = 60 * time.Second
	// DefaultNegativeTTL is how long NXDOMAIN and NODATA for overlay names
	// may be cached (the SOA MINIMUM), short so that a new node is found soon.
	DefaultNegativeTTL = 5 * time.Second
	// DefaultCacheSize is the number of replies cached.
	DefaultCacheSize = 10000
	// DefaultUpstreamTimeout is how long one upstream gets to answer one
	// attempt before the next upstream is tried.
	DefaultUpstreamTimeout = 2 * time.Second
	// DefaultResolveTimeout bounds one call to the Resolver.
	DefaultResolveTimeout = 4 * time.Second

	// MaxUDPSize is the largest UDP reply the server sends and the payload
	// size it advertises in EDNS(0).
	MaxUDPSize = 1232

	// maxForwardTTL caps how long a forwarded reply is cached.
	maxForwardTTL = time.Hour
	// maxInFlight bounds concurrently handled UDP queries per socket.
	maxInFlight = 1024
	// maxTCPConns bounds concurrent TCP connections per listener.
	maxTCPConns = 256
	// tcpIdleTimeout closes a TCP connection with no query for this long.
	tcpIdleTimeout = 10 * time.Second
	// writeTimeout bounds writing one reply on TCP.
	writeTimeout = 5 * time.Second
)

// Resolver looks overlay names and addresses up. The node implements it
// over its verified records. Both methods must be safe for concurrent use
// and should honour ctx.
type Resolver interface {
	// ResolveName returns the node holding name, which is the lowercase
	// FQDN of the question without its trailing dot, with a node ID
	// rejoined: "api.weft.internal" for a node name, and
	// "<64 hex digits>.id.weft.internal" for a node ID (asked in DNS as
	// two labels of 32 hex digits, see IDName, because a DNS label holds
	// at most 63 bytes). The server has already checked the form (one
	// valid node-name label, or a well-formed ID); the resolver parses it
	// further, as weft.Node.Resolve does.
	// An error wrapping ErrNotFound means no such node (NXDOMAIN); any
	// other error is SERVFAIL.
	ResolveName(ctx context.Context, name string) (Answer, error)
	// ResolveAddr returns the node holding overlay address ip (IPv4, or
	// IPv6 including IPv4-mapped, as written in the reverse name), with the
	// same error convention as ResolveName.
	ResolveAddr(ctx context.Context, ip netip.Addr) (Answer, error)
}

// Answer is what a Resolver knows about one node.
type Answer struct {
	// Name is the node's bare name ("api"); empty or invalid → PTR
	// answers name the node by its IDName instead.
	Name string
	// NodeID is the node's ID; zero means unknown (then a PTR for a node
	// without a valid Name fails with SERVFAIL, and an id-form query is
	// not cross-checked).
	NodeID addr.NodeID
	// IPv4 and IPv6 are the node's overlay addresses; an invalid (zero)
	// or wrong-family Addr means the node has none, and A or AAAA queries
	// get NODATA.
	IPv4, IPv6 netip.Addr
	// TTL is how long the record stays valid; 0 (or negative) → DefaultTTL.
	// It is capped at Config.MaxTTL and rounded up to at least a second.
	TTL time.Duration
}

// Config configures a Server. Only Resolver is required.
type Config struct {
	// Domain is the overlay DNS domain, e.g. "weft.internal"; a trailing
	// dot and upper case are accepted. Empty → addr.DefaultDomain.
	Domain string
	// Resolver answers overlay names and addresses. Required.
	Resolver Resolver
	// Prefixes are the overlay address prefixes (the network's IPv4 prefix
	// and ULA /48). Reverse names inside them are answered authoritatively.
	// Empty → every complete reverse name is asked of the Resolver first,
	// and forwarded when it returns ErrNotFound.
	Prefixes []netip.Prefix
	// Upstreams receive every non-overlay question, tried in order.
	// Empty → such questions are REFUSED.
	Upstreams []netip.AddrPort
	// Logger receives the server's logs (component=dns, details at Debug).
	// Nil → logs are discarded.
	Logger *slog.Logger
	// Now is the clock for cache expiry. Nil → time.Now.
	Now func() time.Time
	// CacheSize is the number of replies cached. 0 → DefaultCacheSize;
	// negative → no cache.
	CacheSize int
	// AllowForward says whether a query from src may be forwarded upstream
	// (or answered from forwarded replies in the cache). Nil → only
	// loopback, private (RFC 1918, RFC 4193) sources and sources inside
	// Prefixes may.
	AllowForward func(src netip.Addr) bool
	// MaxTTL caps overlay TTLs. 0 → DefaultMaxTTL.
	MaxTTL time.Duration
	// NegativeTTL is the SOA MINIMUM and TTL, and so how long NXDOMAIN and
	// NODATA for overlay names are cached. 0 → DefaultNegativeTTL.
	NegativeTTL time.Duration
	// UpstreamTimeout bounds one attempt at one upstream. 0 →
	// DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration
	// ResolveTimeout bounds one Resolver call. 0 → DefaultResolveTimeout.
	ResolveTimeout time.Duration
}

// Stats are a server's counters since New. Every query that is not dropped
// counts once in Queries and at most once in each of the others.
type Stats struct {
	Queries     uint64 // queries received and parsed far enough to answer (including FORMERR)
	Dropped     uint64 // packets ignored: shorter than a header, or responses (QR set)
	OverlayHits uint64 // answered from the overlay zone (names, IDs, apex, PTR), cached or not
	NXDomain    uint64 // NXDOMAIN replies, overlay or forwarded
	Forwarded   uint64 // questions sent upstream (cache misses only)
	CacheHits   uint64 // replies served from the cache
	FormErr     uint64 // FORMERR replies
	ServFail    uint64 // SERVFAIL replies
	Refused     uint64 // REFUSED replies (forwarding not allowed or not configured, zone transfers)
	NotImp      uint64 // NOTIMP replies (opcodes other than QUERY)
}

type counters struct {
	queries, dropped, overlayHits, nxdomain, forwarded, cacheHits,
	formErr, servFail, refused, notImp atomic.Uint64
}

// Server is an overlay DNS server. Create it with New; it serves on any
// number of UDP and TCP sockets and stops with Close.
type Server struct {
	zone        string // lowercase FQDN of the domain: "weft.internal."
	resolver    Resolver
	prefixes    []netip.Prefix
	upstreams   []netip.AddrPort
	log         *slog.Logger
	now         func() time.Time
	allow       func(netip.Addr) bool
	maxTTL      time.Duration
	negTTL      time.Duration
	upTimeout   time.Duration
	resTimeout  time.Duration
	cache       *cache
	stats       counters
	ctx         context.Context // cancelled by Close
	cancel      context.CancelFunc
	closeOnce   sync.Once
	serveErrors chan error // fatal errors of loops started by Start

	mu      sync.Mutex // guards the fields below
	closed  bool
	wg      sync.WaitGroup // every goroutine and serve loop; Add only under mu while !closed
	addr    netip.AddrPort // first bound address
	closers map[io.Closer]struct{}
}

// New checks cfg and returns a Server that is not yet serving.
func New(cfg Config) (*Server, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("dns: Config.Resolver must be set (the node's name lookup)")
	}
	domain := strings.ToLower(strings.TrimSuffix(cfg.Domain, "."))
	if domain == "" {
		domain = addr.DefaultDomain
	}
	if err := addr.CheckDomain(domain); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	for _, p := range cfg.Prefixes {
		if !p.IsValid() {
			return nil, fmt.Errorf("dns: Config.Prefixes: %v is not a valid prefix", p)
		}
	}
	for _, u := range cfg.Upstreams {
		if !u.IsValid() || u.Port() == 0 {
			return nil, fmt.Errorf("dns: Config.Upstreams: %v is not an address and port (e.g. 1.1.1.1:53)", u)
		}
	}
	s := &Server{
		zone:        domain + ".",
		resolver:    cfg.Resolver,
		upstreams:   append([]netip.AddrPort(nil), cfg.Upstreams...),
		log:         cfg.Logger,
		now:         cfg.Now,
		allow:       cfg.AllowForward,
		maxTTL:      orDefault(cfg.MaxTTL, DefaultMaxTTL),
		negTTL:      orDefault(cfg.NegativeTTL, DefaultNegativeTTL),
		upTimeout:   orDefault(cfg.UpstreamTimeout, DefaultUpstreamTimeout),
		resTimeout:  orDefault(cfg.ResolveTimeout, DefaultResolveTimeout),
		serveErrors: make(chan error, 2),
		closers:     make(map[io.Closer]struct{}),
	}
	for _, p := range cfg.Prefixes {
		s.prefixes = append(s.prefixes, p.Masked())
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "dns")
	if s.now == nil {
		s.now = time.Now
	}
	if s.allow == nil {
		s.allow = s.defaultAllow
	}
	size := cfg.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	s.cache = newCache(size)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// defaultAllow is AllowForward's nil behaviour.
func (s *Server) defaultAllow(src netip.Addr) bool {
	src = src.Unmap()
	if src.IsLoopback() || src.IsPrivate() {
		return true
	}
	for _, p := range s.prefixes {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Queries:     c.queries.Load(),
		Dropped:     c.dropped.Load(),
		OverlayHits: c.overlayHits.Load(),
		NXDomain:    c.nxdomain.Load(),
		Forwarded:   c.forwarded.Load(),
		CacheHits:   c.cacheHits.Load(),
		FormErr:     c.formErr.Load(),
		ServFail:    c.servFail.Load(),
		Refused:     c.refused.Load(),
		NotImp:      c.notImp.Load(),
	}
}

// Flush empties the cache, e.g. after the anchor set or the node's view of
// the network changed wholesale.
func (s *Server) Flush() { s.cache.flush() }

// Invalidate drops every cached reply about one node or name, e.g. when a
// node is revoked or publishes a new record. name may be a bare node name
// ("api"), NAME.<domain>, a node ID in hex, its IDName (or
// <64 hex>.id.<domain>), or an
// overlay address (or its reverse name); any other name drops cached
// forwarded replies for it.
// Case and a trailing dot do not matter. It returns the number of replies
// dropped.
func (s *Server) Invalidate(name string) int {
	return s.cache.invalidate(s.tagOf(name))
}

// tagOf normalises a name for Invalidate to the tags entries carry.
func (s *Server) tagOf(name string) string {
	n := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	if ip, err := netip.ParseAddr(n); err == nil {
		return ip.WithZone("").String()
	}
	if ip, ok := parseReverseName(n); ok {
		return ip.String()
	}
	if rel, ok := strings.CutSuffix(n, "."+strings.TrimSuffix(s.zone, ".")); ok {
		n = rel
	}
	if id, ok := idFromRel(n); ok {
		return id
	}
	return n
}

// Addr returns the address of the first socket the server was given or
// bound (the UDP one for Start and ListenAndServe), or the zero AddrPort.
func (s *Server) Addr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close stops every serve loop, closes every socket the server was given or
// bound (ServeUDP's PacketConns and ServeTCP's Listeners included) and open
// TCP connections, cancels in-flight lookups, and waits for all the
// server's goroutines to return. It is idempotent and always returns nil;
// concurrent calls all wait.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		closers := make([]io.Closer, 0, len(s.closers))
		for c := range s.closers {
			closers = append(closers, c)
		}
		s.mu.Unlock()
		s.cancel()
		for _, c := range closers {
			c.Close()
		}
		s.wg.Wait()
	})
	return nil
}

// track registers c to be closed by Close and one goroutine for Close to
// wait for. It returns false when the server is closed.
func (s *Server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if c != nil {
		s.closers[c] = struct{}{}
	}
	s.wg.Add(1)
	return true
}

// untrack undoes track when the goroutine is done with c.
func (s *Server) untrack(c io.Closer) {
	if c != nil {
		s.mu.Lock()
		delete(s.closers, c)
		s.mu.Unlock()
	}
	s.wg.Done()
}

func (s *Server) setAddr(a net.Addr) {
	ap := addrPortOf(a)
	s.mu.Lock()
	if !s.addr.IsValid() {
		s.addr = ap
	}
	s.mu.Unlock()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// addrPortOf converts a UDP or TCP net.Addr to a netip.AddrPort, with
// IPv4-mapped addresses unmapped; others give the zero AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
