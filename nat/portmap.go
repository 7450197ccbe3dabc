package nat

// A NAT-PMP client (RFC 6886): asks the home router to forward a UDP port,
// so that peers behind other NATs can reach this host directly.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// NAT-PMP protocol constants (RFC 6886).
const (
	pmpPort    = 5351 // the gateway's NAT-PMP port
	pmpVersion = 0

	pmpOpPublicAddr = 0   // request the external IPv4 address
	pmpOpMapUDP     = 1   // create, renew or delete a UDP mapping
	pmpOpReply      = 128 // added to the request opcode in a response

	pmpPublicAddrLen = 12 // success response to pmpOpPublicAddr
	pmpMapLen        = 16 // success response to pmpOpMapUDP
	pmpHeaderLen     = 4  // version, opcode, result code

	// pmpInitialRTO and pmpMaxRequests are RFC 6886 section 3.1's
	// retransmission schedule: 250 ms, doubling, at most 9 requests.
	pmpInitialRTO  = 250 * time.Millisecond
	pmpMaxRequests = 9
)

// PortMapper tunables.
const (
	defaultMapLifetime = 2 * time.Hour
	pmpRetryMin        = 30 * time.Second
	pmpRetryMax        = 30 * time.Minute
	pmpUnmapTimeout    = time.Second
	pmpMinRenew        = time.Second // never renew more often than this
)

var (
	// ErrNoPMPAnswer is returned by MapUDP and UnmapUDP when the gateway did
	// not answer: it does not offer NAT-PMP, or it is switched off in its
	// settings.
	ErrNoPMPAnswer = errors.New("no NAT-PMP answer")

	// ErrMalformedPMP is returned by parsePMPResponse for a datagram that is
	// not a NAT-PMP response.
	ErrMalformedPMP = errors.New("nat: malformed NAT-PMP response")
)

// PMPResultError is a NAT-PMP response with a non-zero result code. MapUDP
// and UnmapUDP return it wrapped; use errors.As to get at it.
type PMPResultError struct {
	Gateway netip.AddrPort
	Code    uint16
}

func (e *PMPResultError) Error() string {
	var what string
	switch e.Code {
	case 1:
		what = "unsupported version (the gateway speaks a newer protocol such as PCP, which weft does not use)"
	case 2:
		what = "not authorized or refused (port mapping is disabled on the gateway; enable NAT-PMP in its settings)"
	case 3:
		what = "network failure (the gateway has no public address yet; try again once it is online)"
	case 4:
		what = "out of resources (the gateway has no free mappings or ports left; remove unused port mappings on it)"
	case 5:
		what = "unsupported opcode (the gateway does not support UDP mappings)"
	default:
		what = "unknown error"
	}
	return fmt.Sprintf("NAT-PMP gateway %s: result code %d: %s", e.Gateway, e.Code, what)
}

// PortMapping is a UDP port mapping a NAT gateway made for this host.
type PortMapping struct {
	Protocol string         // "NAT-PMP"
	Gateway  netip.Addr     // the gateway that made it
	Internal uint16         // the host's UDP port
	External netip.AddrPort // the gateway's public address and the mapped port
	Lifetime time.Duration  // as granted
	Expires  time.Time
}

// IsZero reports whether m is the zero PortMapping (no mapping).
func (m PortMapping) IsZero() bool { return m == PortMapping{} }

// String describes m, as in "NAT-PMP 203.0.113.5:41641 -> :41641 via
// 10.0.1.1, 2h0m0s".
func (m PortMapping) String() string {
	if m.IsZero() {
		return "no port mapping"
	}
	return fmt.Sprintf("%s %s -> :%d via %s, %s", m.Protocol, m.External, m.Internal, m.Gateway, m.Lifetime)
}

// pmpResponse is a decoded NAT-PMP response. Fields a response does not
// carry are zero.
type pmpResponse struct {
	Opcode   uint8  // 128 + the request's opcode
	Result   uint16 // 0 on success
	Epoch    uint32 // seconds since the gateway's start of epoch
	External netip.Addr
	Internal uint16 // opcode 129
	Mapped   uint16 // opcode 129: the external port
	Lifetime uint32 // opcode 129: seconds granted
	Short    bool   // an error response shorter than the success response: only Opcode and Result are set
}

// parsePMPResponse decodes a NAT-PMP response. A success response must have
// exactly its length; an error response may be shorter (RFC 6886 lets a
// gateway answer an unsupported version or opcode with a bare header or the
// echoed request), and then only its opcode and result code are decoded.
func parsePMPResponse(b []byte) (pmpResponse, error) {
	if len(b) < pmpHeaderLen {
		return pmpResponse{}, fmt.Errorf("%w: %d bytes", ErrMalformedPMP, len(b))
	}
	if b[0] != pmpVersion {
		return pmpResponse{}, fmt.Errorf("%w: version %d", ErrMalformedPMP, b[0])
	}
	r := pmpResponse{Opcode: b[1], Result: binary.BigEndian.Uint16(b[2:4])}
	var full int
	switch r.Opcode {
	case pmpOpReply + pmpOpPublicAddr:
		full = pmpPublicAddrLen
	case pmpOpReply + pmpOpMapUDP:
		full = pmpMapLen
	default:
		return pmpResponse{}, fmt.Errorf("%w: opcode %d", ErrMalformedPMP, r.Opcode)
	}
	switch {
	case len(b) == full:
	case r.Result != 0 && len(b) < full:
		r.Short = true
		return r, nil
	default:
		return pmpResponse{}, fmt.Errorf("%w: %d bytes for opcode %d, result %d", ErrMalformedPMP, len(b), r.Opcode, r.Result)
	}
	r.Epoch = binary.BigEndian.Uint32(b[4:8])
	if r.Opcode == pmpOpReply+pmpOpPublicAddr {
		r.External = netip.AddrFrom4([4]byte(b[8:12]))
		return r, nil
	}
	r.Internal = binary.BigEndian.Uint16(b[8:10])
	r.Mapped = binary.BigEndian.Uint16(b[10:12])
	r.Lifetime = binary.BigEndian.Uint32(b[12:16])
	return r, nil
}

// appendPMPResponse appends the encoding of r (a fake gateway's answer; the
// inverse of parsePMPResponse). A Short response is its header only.
func appendPMPResponse(b []byte, r pmpResponse) []byte {
	b = append(b, pmpVersion, r.Opcode)
	b = binary.BigEndian.AppendUint16(b, r.Result)
	if r.Short {
		return b
	}
	b = binary.BigEndian.AppendUint32(b, r.Epoch)
	if r.Opcode == pmpOpReply+pmpOpPublicAddr {
		a := r.External.As4()
		return append(b, a[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, r.Internal)
	b = binary.BigEndian.AppendUint16(b, r.Mapped)
	return binary.BigEndian.AppendUint32(b, r.Lifetime)
}

// mapRequest encodes a request to map internal to the suggested external
// port for lifetime (0 deletes the mapping).
func mapRequest(internal, external uint16, lifetime uint32) []byte {
	b := []byte{pmpVersion, pmpOpMapUDP, 0, 0}
	b = binary.BigEndian.AppendUint16(b, internal)
	b = binary.BigEndian.AppendUint16(b, external)
	return binary.BigEndian.AppendUint32(b, lifetime)
}

// MapUDP asks gateway (NAT-PMP on UDP port 5351) to map the host's UDP
// port internal, suggesting the same external port, for lifetime. It asks
// for the public address (opcode 0) and the mapping (opcode 1),
// retransmitting as RFC 6886 section 3.1 says (250 ms doubling) until ctx
// is done, at most 9 times. A gateway that does not answer gives an error
// wrapping ErrNoPMPAnswer; a non-zero result code gives a *PMPResultError.
func MapUDP(ctx context.Context, gateway netip.Addr, internal uint16, lifetime time.Duration) (PortMapping, error) {
	m, _, err := mapUDP(ctx, netip.AddrPortFrom(gateway, pmpPort), internal, lifetime)
	return m, err
}

// UnmapUDP deletes the mapping of internal (a mapping request with
// lifetime 0 and external port 0).
func UnmapUDP(ctx context.Context, gateway netip.Addr, internal uint16) error {
	return unmapUDP(ctx, netip.AddrPortFrom(gateway, pmpPort), internal)
}

// mapUDP is MapUDP with the gateway's port given; it also returns the epoch
// of the mapping response.
func mapUDP(ctx context.Context, gw netip.AddrPort, internal uint16, lifetime time.Duration) (PortMapping, uint32, error) {
	if internal == 0 {
		return PortMapping{}, 0, fmt.Errorf("nat-pmp map: internal port 0")
	}
	if lifetime <= 0 {
		return PortMapping{}, 0, fmt.Errorf("nat-pmp map: lifetime %v; use UnmapUDP to delete a mapping", lifetime)
	}
	secs := uint32(math.MaxUint32)
	if s := (lifetime + time.Second - 1) / time.Second; s < math.MaxUint32 {
		secs = uint32(s)
	}
	pub, err := pmpExchange(ctx, gw, []byte{pmpVersion, pmpOpPublicAddr}, func(pmpResponse) bool { return true })
	if err != nil {
		return PortMapping{}, 0, fmt.Errorf("nat-pmp public address: %w", err)
	}
	matchPort := func(r pmpResponse) bool { return r.Short || r.Internal == internal }
	r, err := pmpExchange(ctx, gw, mapRequest(internal, internal, secs), matchPort)
	if err != nil {
		return PortMapping{}, 0, fmt.Errorf("nat-pmp map udp port %d: %w", internal, err)
	}
	if r.Lifetime == 0 || r.Mapped == 0 {
		return PortMapping{}, 0, fmt.Errorf("nat-pmp map udp port %d: gateway %s granted port %d for %d s, which is no mapping", internal, gw, r.Mapped, r.Lifetime)
	}
	granted := time.Duration(r.Lifetime) * time.Second
	return PortMapping{
		Protocol: "NAT-PMP",
		Gateway:  gw.Addr(),
		Internal: internal,
		External: netip.AddrPortFrom(pub.External, r.Mapped),
		Lifetime: granted,
		Expires:  time.Now().Add(granted),
	}, r.Epoch, nil
}

// unmapUDP is UnmapUDP with the gateway's port given.
func unmapUDP(ctx context.Context, gw netip.AddrPort, internal uint16) error {
	matchPort := func(r pmpResponse) bool { return r.Short || r.Internal == internal }
	if _, err := pmpExchange(ctx, gw, mapRequest(internal, 0, 0), matchPort); err != nil {
		return fmt.Errorf("nat-pmp unmap udp port %d: %w", internal, err)
	}
	return nil
}

// pmpExchange sends req to gw from a fresh socket, retransmitting on RFC
// 6886's schedule, until a response to it arrives for which match is true.
// Datagrams that are not such a response are ignored. A response with a
// non-zero result code is returned as a *PMPResultError.
func pmpExchange(ctx context.Context, gw netip.AddrPort, req []byte, match func(pmpResponse) bool) (pmpResponse, error) {
	gw = netip.AddrPortFrom(gw.Addr().Unmap(), gw.Port())
	if !gw.Addr().Is4() {
		return pmpResponse{}, fmt.Errorf("gateway %s is not an IPv4 address", gw.Addr())
	}
	noAnswer := fmt.Errorf("%w from %s (the gateway does not offer port mapping, or it is off)", ErrNoPMPAnswer, gw)
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(gw))
	if err != nil {
		return pmpResponse{}, err
	}
	defer c.Close()
	// Wake a blocked read when ctx is done.
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	buf := make([]byte, 64)
	rto := pmpInitialRTO
	for range pmpMaxRequests {
		if ctx.Err() != nil {
			return pmpResponse{}, noAnswer
		}
		if _, err := c.Write(req); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				return pmpResponse{}, noAnswer // an earlier request drew port unreachable
			}
			return pmpResponse{}, fmt.Errorf("send to %s: %w", gw, err)
		}
		deadline := time.Now().Add(rto)
		rto *= 2
		if ctx.Err() != nil {
			return pmpResponse{}, noAnswer
		}
		c.SetReadDeadline(deadline)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if ctx.Err() != nil {
					return pmpResponse{}, noAnswer
				}
				if errors.Is(err, syscall.ECONNREFUSED) {
					// ICMP port unreachable: nothing listens on the
					// gateway's NAT-PMP port.
					return pmpResponse{}, noAnswer
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // retransmit
				}
				return pmpResponse{}, fmt.Errorf("receive from %s: %w", gw, err)
			}
			if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != gw {
				continue
			}
			r, err := parsePMPResponse(buf[:n])
			if err != nil || r.Opcode != pmpOpReply+req[1] || !match(r) {
				continue
			}
			if r.Result != 0 {
				return pmpResponse{}, &PMPResultError{Gateway: gw, Code: r.Result}
			}
			return r, nil
		}
	}
	return pmpResponse{}, noAnswer
}

// PortMapperConfig configures NewPortMapper.
type PortMapperConfig struct {
	// Port is the host's UDP port to map. Required.
	Port uint16

	// Gateway returns the NAT gateway to ask. Nil means DefaultGateway.
	Gateway func() (netip.Addr, error)

	// Lifetime is the mapping lifetime asked for. Zero means 2 hours.
	Lifetime time.Duration

	// OnChange, if not nil, is called from the mapper's goroutine when the
	// mapping appears, changes (external address or port) or goes (a zero
	// PortMapping, also after Close). Calls are not concurrent. It must not
	// call Close, which waits for that goroutine.
	OnChange func(PortMapping)

	// Log receives diagnostics, with a "component"="portmap" attribute.
	// Nil means slog.Default().
	Log *slog.Logger
}

// PortMapper keeps a mapping of one port: it maps at Start, renews at half
// the lifetime, maps again when a renewal fails or the gateway's epoch
// (seconds since start of epoch in every answer) went backwards (it
// rebooted and lost its mappings), and retries a gateway that did not
// answer with backoff (30 s doubling to 30 min). Safe for concurrent use.
type PortMapper struct {
	cfg      PortMapperConfig
	log      *slog.Logger
	gwPort   uint16        // the gateway's NAT-PMP port: pmpPort, or a test's fake
	retryMin time.Duration // first backoff after a failure
	retryMax time.Duration

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wake   chan struct{} // Refresh asks the goroutine to map now; capacity 1
	done   chan struct{} // closed when the goroutine has exited

	mu        sync.Mutex // guards the fields below
	started   bool
	closed    bool
	mapping   PortMapping
	err       error
	cancelOp  context.CancelFunc // cancels the exchange in flight; nil if none
	refreshed bool               // Refresh was called since the goroutine last looked
}

// NewPortMapper returns a PortMapper for cfg. It does nothing until Start.
func NewPortMapper(cfg PortMapperConfig) (*PortMapper, error) {
	if cfg.Port == 0 {
		return nil, errors.New("nat port mapper: no port to map (PortMapperConfig.Port is 0)")
	}
	if cfg.Gateway == nil {
		cfg.Gateway = DefaultGateway
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = defaultMapLifetime
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &PortMapper{
		cfg:      cfg,
		log:      log.With("component", "portmap"),
		gwPort:   pmpPort,
		retryMin: pmpRetryMin,
		retryMax: pmpRetryMax,
		ctx:      ctx,
		cancel:   cancel,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}, nil
}

// Start starts the mapper's goroutine, which maps the port right away.
// Calls after the first, or after Close, do nothing.
func (p *PortMapper) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.closed {
		return
	}
	p.started = true
	go p.run()
}

// Mapping returns the current mapping, and false if there is none.
func (p *PortMapper) Mapping() (PortMapping, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mapping, !p.mapping.IsZero()
}

// Err returns the last error (nil after a success), for status output.
func (p *PortMapper) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Refresh tells the mapper the network changed: it looks up the gateway
// again and maps again now, abandoning an exchange in flight.
func (p *PortMapper) Refresh() {
	p.mu.Lock()
	p.refreshed = true
	if p.cancelOp != nil {
		p.cancelOp()
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Close stops the mapper and deletes the mapping (waiting at most 1 s for
// the gateway), then calls OnChange with a zero PortMapping if there was a
// mapping. It waits for the mapper's goroutine and is idempotent.
func (p *PortMapper) Close() error {
	p.mu.Lock()
	p.closed = true
	started := p.started
	p.mu.Unlock()
	p.cancel()
	if started {
		<-p.done
	}
	return nil
}

// run is the mapper's goroutine.
func (p *PortMapper) run() {
	defer close(p.done)
	var (
		gw        netip.Addr
		epoch     uint32    // the gateway's epoch at epochTime
		epochTime time.Time // zero: no epoch seen from gw yet
		backoff   time.Duration
	)
	for p.ctx.Err() == nil {
		p.mu.Lock()
		lookup := p.refreshed || !gw.IsValid()
		p.refreshed = false
		p.mu.Unlock()
		select {
		case <-p.wake: // this iteration serves any Refresh so far
		default:
		}
		if lookup {
			g, err := p.cfg.Gateway()
			if err != nil {
				p.failed(fmt.Errorf("nat port mapper: find gateway: %w", err), netip.Addr{})
				backoff = p.retryWait(backoff)
				continue
			}
			if g != gw {
				p.log.Debug("port mapping gateway", "gateway", g)
				gw, epochTime = g, time.Time{}
			}
		}

		m, e, err := p.mapOnce(gw)
		if err != nil {
			if p.ctx.Err() != nil {
				break
			}
			if p.takeRefresh() {
				continue
			}
			p.failed(err, gw)
			backoff = p.retryWait(backoff)
			continue
		}
		backoff = 0
		now := time.Now()
		rebooted := !epochTime.IsZero() && pmpRebooted(epoch, epochTime, e, now)
		epoch, epochTime = e, now
		p.succeeded(m)
		if rebooted {
			// The gateway lost its mappings: the request just made created
			// ours again, but map once more so that the mapping is one
			// made after the reboot, as RFC 6886 section 3.7 asks.
			p.log.Info("NAT-PMP gateway restarted; mapping again", "gateway", gw)
			continue
		}
		renew := max(m.Lifetime/2, pmpMinRenew)
		p.sleep(renew)
	}
	p.unmapAtClose()
}

// mapOnce runs one mapping request to gw, cancellable by Refresh and Close.
func (p *PortMapper) mapOnce(gw netip.Addr) (PortMapping, uint32, error) {
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	p.mu.Lock()
	p.cancelOp = cancel
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.cancelOp = nil
		p.mu.Unlock()
	}()
	return mapUDP(ctx, netip.AddrPortFrom(gw, p.gwPort), p.cfg.Port, p.cfg.Lifetime)
}

// takeRefresh reports whether Refresh was called, leaving it pending for
// the top of the loop.
func (p *PortMapper) takeRefresh() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refreshed
}

// pmpRebooted reports whether a gateway that said epoch at then and now
// says e has restarted since: RFC 6886 section 3.6 lets its clock run 1/8
// slow (and allows 2 s of slack), so anything below that is a restart.
func pmpRebooted(epoch uint32, then time.Time, e uint32, now time.Time) bool {
	elapsed := now.Sub(then)
	want := int64(epoch) + int64(elapsed*7/8/time.Second) - 2
	return int64(e) < want
}

// succeeded records m as the current mapping and reports a change.
func (p *PortMapper) succeeded(m PortMapping) {
	p.mu.Lock()
	old := p.mapping
	p.mapping, p.err = m, nil
	p.mu.Unlock()
	if old.External != m.External {
		p.log.Info("port mapped", "mapping", m)
		p.notify(m)
	} else {
		p.log.Debug("port mapping renewed", "mapping", m)
	}
}

// failed records err and drops the mapping if it has expired or was made
// by a gateway other than gw, the current one.
func (p *PortMapper) failed(err error, gw netip.Addr) {
	p.mu.Lock()
	old := p.mapping
	expired := !old.IsZero() && (!time.Now().Before(old.Expires) || old.Gateway != gw)
	if expired {
		p.mapping = PortMapping{}
	}
	repeated := p.err != nil && p.err.Error() == err.Error()
	p.err = err
	p.mu.Unlock()
	// Most networks have no gateway that maps ports (a server's
	// provider, a phone's carrier): that is worth a line, not a warning.
	// A gateway that answers and refuses is.
	var refused *PMPResultError
	switch {
	case repeated:
		p.log.Debug("port mapping failed", "err", err)
	case errors.As(err, &refused):
		p.log.Warn("port mapping failed", "err", err)
	default:
		p.log.Info("no port mapping", "err", err)
	}
	if expired {
		p.log.Info("port mapping expired", "mapping", old)
		p.notify(PortMapping{})
	}
}

// retryWait waits before retrying after a failure: the backoff following
// prev, or less to drop a mapping when it expires. It returns the backoff
// it used.
func (p *PortMapper) retryWait(prev time.Duration) time.Duration {
	d := p.retryMin
	if prev > 0 {
		d = min(prev*2, p.retryMax)
	}
	wait := d
	if m, ok := p.Mapping(); ok {
		wait = min(wait, max(time.Until(m.Expires), 0)+time.Millisecond)
	}
	p.sleep(wait)
	return d
}

// sleep waits for d, Refresh or Close.
func (p *PortMapper) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.wake:
	case <-p.ctx.Done():
	}
}

// unmapAtClose deletes the mapping, if any, and reports it gone.
func (p *PortMapper) unmapAtClose() {
	p.mu.Lock()
	m := p.mapping
	p.mapping = PortMapping{}
	p.mu.Unlock()
	if m.IsZero() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), pmpUnmapTimeout)
	defer cancel()
	if err := unmapUDP(ctx, netip.AddrPortFrom(m.Gateway, p.gwPort), m.Internal); err != nil {
		p.log.Debug("port unmap failed", "err", err)
	} else {
		p.log.Debug("port unmapped", "mapping", m)
	}
	p.notify(PortMapping{})
}

func (p *PortMapper) notify(m PortMapping) {
	if p.cfg.OnChange != nil {
		p.cfg.OnChange(m)
	}
}
