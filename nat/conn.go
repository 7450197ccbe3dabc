package nat

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Tunables that are not worth a Config field yet.
const (
	// BatchSize is the number of datagrams read or written per system call
	// by the background reader, and the Bind's BatchSize (wireguard-go
	// reads max(BatchSize, its TUN's batch size) per ReceiveFunc call: 128
	// with a kernel TUN device). wireguard-go's receive routine keeps one
	// 64 KiB message buffer per batch slot whether or not it is filled, so
	// this is also a fixed memory cost: 32 slots hold 2 MiB, 64 held 4 MiB.
	// Halving it from 64 (together with netstack's batch, 128 -> 32) cut
	// the peak RSS of a daemon carrying one stream from ~51-65 MB to ~47-48
	// MB (make bench) with no loss of throughput against bare wireguard-go.
	BatchSize = 32

	// groReadMsgs is the number of datagrams read per system call into an
	// rxBatch when the socket has UDP GRO. Each needs a groBufSize buffer
	// (a coalesced datagram holds up to udpSegmentMaxDatagrams segments),
	// so a batch pins 512 KiB. Batches are only used by the background
	// reader (while the Bind is closed) and by ReceiveFuncs given buffers
	// too small to read into; an open Bind fed by wireguard-go reads
	// straight into wireguard-go's buffers.
	groReadMsgs = 8
	groBufSize  = 1 << 16

	// directBufSize is the smallest buffer a ReceiveFunc reads datagrams
	// straight into with GRO: any UDP datagram fits (wireguard-go's
	// buffers are exactly this size, device.MaxMessageSize).
	directBufSize = groBufSize - 1

	// sendBatchMsgs is the number of messages per sendmmsg. With GSO a
	// message carries several packets; wireguard-go hands the Bind up to
	// 128 packets at once in TUN mode.
	sendBatchMsgs = 128

	// udpSegmentMaxDatagrams is the kernel's limit on segments in one
	// UDP GSO send (UDP_MAX_SEGMENTS), and so also in one GRO datagram.
	udpSegmentMaxDatagrams = 64

	numControlWorkers   = 4
	controlQueueLen     = 512
	maxInflightHandlers = 256
	handlerTimeout      = 10 * time.Second
	maxInternedEPs      = 4096 // received endpoints remembered by the reader
	maxLimiterEntries   = 16384
	socketBufferSize    = 7 << 20 // as wireguard-go asks for
)

// Config configures Listen.
type Config struct {
	// Addr is the local address to bind. The zero value binds every local
	// address, IPv4 and IPv6 (a dual-stack socket), on a random port. An
	// IPv4 address gives an IPv4-only socket, an IPv6 address an IPv6 one; a
	// zero port picks a random port.
	Addr netip.AddrPort

	// PrivateKey is the node's Curve25519 private key (its WireGuard key).
	// Control messages are sealed and opened with it. It must not be zero.
	PrivateKey [32]byte

	// Logger receives diagnostics, with a "component"="nat" attribute. Nil
	// discards them.
	Logger *slog.Logger

	// RateLimit is the sustained number of requests per second handled for
	// one source IP address. Zero means 100.
	RateLimit float64

	// RateBurst is the number of requests one source IP may send at once
	// before RateLimit applies. Zero means 200.
	RateBurst int

	// KeyCacheSize bounds the number of precomputed shared keys kept. Zero
	// means 4096.
	KeyCacheSize int

	// STUNRateLimit is the sustained number of STUN Binding requests per
	// second the responder answers for one source IP address. Zero means
	// 20.
	STUNRateLimit float64

	// STUNRateBurst is the number of Binding requests one source IP may
	// send at once before STUNRateLimit applies. Zero means 40.
	STUNRateBurst int

	// Now is the clock used for rate limiting. Nil means time.Now.
	Now func() time.Time
}

// Peer is a remote node as seen by the control RPC: where its packets come
// from and go to, and its Curve25519 public key. For sealed messages Key is
// authenticated by the box; Addr never is.
type Peer struct {
	Addr netip.AddrPort
	Key  [32]byte
}

func (p Peer) String() string { return fmt.Sprintf("%s/%x", p.Addr, p.Key[:4]) }

// Handler serves one control request. from is the sender (authenticated by
// its key, except for plain MsgHello requests). The returned body is sent back
// as the response; a non-nil error is sent back instead and surfaces at the
// caller as a *RemoteError. ctx is cancelled when the Conn closes or after a
// timeout. body is owned by the handler.
type Handler func(ctx context.Context, from Peer, body []byte) ([]byte, error)

// batchConn is the recvmmsg/sendmmsg view of the socket. ipv4.Message and
// ipv6.Message are both aliases of x/net's socket.Message.
type batchConn interface {
	ReadBatch(ms []ipv6.Message, flags int) (int, error)
	WriteBatch(ms []ipv6.Message, flags int) (int, error)
}

var (
	_ batchConn    = (*ipv4.PacketConn)(nil)
	_ batchConn    = (*ipv6.PacketConn)(nil)
	_ ipv6.Message = ipv4.Message{}
)

// Conn is a node's shared UDP socket: the WireGuard Bind, the control RPC,
// STUN (responder, client, ICE hook) and (later) TURN all go through it.
// Its methods are safe for concurrent use.
type Conn struct {
	log   *slog.Logger
	udp   *net.UDPConn
	pc    batchConn
	wpc   batchConn // the sendmmsg side: pc, except in tests that fake kernel refusals
	local netip.AddrPort
	now   func() time.Time
	// ks is the current key and its shared-key cache; prev the one before
	// the last SetPrivateKey, still accepted for opening packets so that
	// calls in flight during a key rotation complete.
	ks, prev  atomic.Pointer[keySet]
	cacheSize int
	lim       *limiter
	stats     counters
	bind      bind

	gro bool        // UDP_GRO is on: received datagrams may be coalesced
	gso atomic.Bool // UDP_SEGMENT is used on send; cleared if the kernel refuses it

	// rx is the read baton: whoever holds the *rxState may read the
	// socket (the background reader, or a ReceiveFunc while the Bind is
	// open). See receive.go.
	rx chan *rxState

	rxPool  sync.Pool // *rxBatch
	txPool  sync.Pool // *txBatch
	ctlPool sync.Pool // *[]byte of MaxControlSize

	ctlq     chan ctlPacket
	stunq    chan ctlPacket // STUN datagrams, for the same workers
	inflight chan struct{}  // semaphore for running handlers

	handlersMu sync.RWMutex // guards handlers
	handlers   map[MsgType]Handler

	pendingMu sync.Mutex // guards pending
	pending   map[uint64]*pendingCall

	stunLim     *limiter // the Binding responder's per-source limit
	stunHandler atomic.Pointer[STUNHandler]
	stunMu      sync.Mutex // guards stunTx
	stunTx      map[stunTxID]*stunTxn

	probeMu sync.RWMutex // guards probe
	probe   *ProbeConfig // nil: MsgProbe not served

	// relayed maps the address of each open RelayedEndpoint to it
	// (netip.AddrPort to *RelayedEndpoint), so that the Bind hands what
	// WireGuard sends there straight to its write (relayed.go).
	relayed  sync.Map
	nRelayed atomic.Int64 // entries in relayed

	ctx       context.Context // cancelled by Close; parent of handler contexts
	cancel    context.CancelFunc
	closing   chan struct{} // closed by Close
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // background reader, workers and handlers
}

// Listen opens the node's UDP socket and starts its reader and control
// workers. Close the Conn to release them.
func Listen(cfg Config) (*Conn, error) {
	if cfg.PrivateKey == ([32]byte{}) {
		return nil, fmt.Errorf("nat listen: Config.PrivateKey is zero; pass the node's WireGuard private key: %w", ErrBadKey)
	}
	pub, err := publicKey(&cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("nat listen: deriving public key: %w", err)
	}
	network, laddr := "udp", &net.UDPAddr{Port: int(cfg.Addr.Port())}
	if a := cfg.Addr.Addr(); a.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.Unmap(), cfg.Addr.Port()))
		if a.Unmap().Is4() {
			network = "udp4"
		} else {
			network = "udp6"
		}
	}
	udp, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("nat listen %s: %w", cfg.Addr, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "nat")
	// Best effort: bigger socket buffers absorb bursts at high throughput.
	if err := udp.SetReadBuffer(socketBufferSize); err != nil {
		log.Debug("setting socket receive buffer", "err", err)
	}
	if err := udp.SetWriteBuffer(socketBufferSize); err != nil {
		log.Debug("setting socket send buffer", "err", err)
	}

	c := &Conn{
		log:      log,
		udp:      udp,
		local:    unmapAddrPort(udp.LocalAddr().(*net.UDPAddr).AddrPort()),
		now:      cfg.Now,
		ctlq:     make(chan ctlPacket, controlQueueLen),
		stunq:    make(chan ctlPacket, stunQueueLen),
		stunTx:   make(map[stunTxID]*stunTxn),
		inflight: make(chan struct{}, maxInflightHandlers),
		handlers: make(map[MsgType]Handler),
		pending:  make(map[uint64]*pendingCall),
		closing:  make(chan struct{}),
		rx:       make(chan *rxState, 1),
	}
	c.rx <- newRxState()
	tx, rx, err := enableOffload(udp)
	if err != nil {
		log.Debug("probing UDP offloads", "err", err)
	}
	c.gro = rx
	c.gso.Store(tx)
	if network == "udp4" {
		c.pc = ipv4.NewPacketConn(udp)
	} else {
		c.pc = ipv6.NewPacketConn(udp)
	}
	c.wpc = c.pc
	if c.now == nil {
		c.now = time.Now
	}
	rate, burst, cacheSize := cfg.RateLimit, float64(cfg.RateBurst), cfg.KeyCacheSize
	if rate <= 0 {
		rate = 100
	}
	if burst <= 0 {
		burst = 200
	}
	if cacheSize <= 0 {
		cacheSize = 4096
	}
	c.cacheSize = cacheSize
	c.ks.Store(&keySet{priv: cfg.PrivateKey, pub: pub, keys: newKeyCache(cacheSize)})
	c.lim = newLimiter(rate, burst, maxLimiterEntries)
	stunRate, stunBurst := cfg.STUNRateLimit, float64(cfg.STUNRateBurst)
	if stunRate <= 0 {
		stunRate = 20
	}
	if stunBurst <= 0 {
		stunBurst = 40
	}
	c.stunLim = newLimiter(stunRate, stunBurst, maxLimiterEntries)
	c.bind.c = c
	c.rxPool.New = func() any { return newRxBatch(c.gro) }
	c.txPool.New = func() any { return newTxBatch() }
	c.ctlPool.New = func() any { b := make([]byte, MaxControlSize); return &b }
	c.ctx, c.cancel = context.WithCancel(context.Background())

	c.wg.Add(1 + numControlWorkers)
	go c.readLoop()
	for range numControlWorkers {
		go c.controlWorker()
	}
	c.log.Debug("listening", "addr", c.local, "gso", tx, "gro", rx)
	return c, nil
}

// LocalAddr returns the socket's local address. For a dual-stack socket the
// address is the IPv6 unspecified address.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// PublicKey returns the Curve25519 public key of Config.PrivateKey, the key
// peers seal control messages to.
func (c *Conn) PublicKey() [32]byte { return c.ks.Load().pub }

// Offloads reports whether the socket uses UDP segmentation offload on send
// (GSO: several WireGuard packets to one peer in one system call and one
// trip through the stack) and receives coalesced datagrams (GRO). Both are
// Linux-only; GSO is turned off for good if the kernel refuses it.
func (c *Conn) Offloads() (gso, gro bool) { return c.gso.Load(), c.gro }

// Stats returns a snapshot of the counters.
func (c *Conn) Stats() Stats { return c.stats.snapshot() }

// Close closes the socket, closes the Bind, fails pending calls with
// ErrClosed, cancels running handlers and waits for every goroutine the Conn
// started. It is idempotent: the first call returns the socket's close
// error, later calls return nil.
func (c *Conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.closed.Store(true)
		close(c.closing)
		c.cancel()
		c.bind.Close()
		c.closeErr = c.udp.Close()
		c.wg.Wait()
		c.log.Debug("closed", "addr", c.local)
	})
	if !first {
		return nil
	}
	return c.closeErr
}

// writeTo sends one datagram.
func (c *Conn) writeTo(pkt []byte, to netip.AddrPort) error {
	_, err := c.udp.WriteToUDPAddrPort(pkt, to)
	return err
}

func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
