package nat

// Netcheck: what the network between this socket and the internet does to
// UDP, in RFC 4787 terms, found with STUN Binding requests from the shared
// socket and filtering probes (probe.go).
//
//   - UDP blocked: no STUN server answered at all.
//   - Mapping: the public address each server saw. The same address toward
//     two different server IP addresses means endpoint-independent mapping
//     (hole punching works); different ones, endpoint-dependent (a
//     "symmetric" NAT: a peer behind one needs a relay unless the other
//     side is open). A mapped address equal to the socket's own address
//     means no NAT. With answers from one server IP only, mapping is
//     unknown (unless there is no NAT).
//   - Filtering: change-IP and change-port probes from Probers. Unknown,
//     with the reason, without probers or when they cannot do the test.
//
// Latency is the time from a server's first request to its response (so
// it includes retransmissions on a lossy path).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults for NetcheckConfig.
const (
	DefaultNetcheckTimeout = 3 * time.Second
	DefaultProbeWait       = time.Second
)

// NetcheckConfig configures Netcheck.
type NetcheckConfig struct {
	// STUN lists STUN servers: any public weft node, or external ones
	// (coturn, ...). Telling endpoint-independent from endpoint-dependent
	// mapping needs answers from two different IP addresses. At least one
	// is required.
	STUN []netip.AddrPort

	// Probers are weft nodes serving MsgProbe (ServeProbes), asked in turn
	// until one can tell the filtering. Empty leaves filtering unknown.
	Probers []Peer

	// Timeout bounds each STUN transaction and each probe request. Zero
	// means DefaultNetcheckTimeout.
	Timeout time.Duration

	// ProbeWait is how long to wait for a probe packet after the prober
	// said it sent it. Zero means DefaultProbeWait.
	ProbeWait time.Duration

	// LocalAddrs returns the host's own IP addresses, to recognise "no NAT"
	// (a mapped address that is the socket's own). Nil means the socket's
	// bound address if it has one, else net.InterfaceAddrs. (Inject it
	// where the socket lives in another network namespace than the
	// calling thread.)
	LocalAddrs func() ([]netip.Addr, error)

	// Mapped, if set, is called once the STUN answers are in and the
	// mapping is classified, before the filtering probes (each of which
	// may wait ProbeWait or more), with a copy of the report whose
	// Filtering is still unknown. It is called only when probes follow
	// (UDP works and there are Probers), on Netcheck's goroutine, and
	// must not block.
	Mapped func(*NATReport)
}

// Mapping is a NAT's mapping behaviour (RFC 4787 section 4.1).
type Mapping uint8

// Mapping behaviours.
const (
	MappingUnknown             Mapping = iota
	MappingNone                        // no NAT: the socket's own address is public
	MappingEndpointIndependent         // one public address for every destination
	MappingEndpointDependent           // a public address per destination ("symmetric")
)

func (m Mapping) String() string {
	switch m {
	case MappingNone:
		return "none (no NAT)"
	case MappingEndpointIndependent:
		return "endpoint-independent"
	case MappingEndpointDependent:
		return "endpoint-dependent"
	}
	return "unknown"
}

// Filtering is a NAT's (or firewall's) filtering behaviour for inbound UDP
// (RFC 4787 section 5).
type Filtering uint8

// Filtering behaviours.
const (
	FilteringUnknown                 Filtering = iota
	FilteringEndpointIndependent               // anyone may send to a mapping
	FilteringAddressDependent                  // hosts the node has sent to, from any port
	FilteringAddressAndPortDependent           // only the exact address:port the node has sent to
)

func (f Filtering) String() string {
	switch f {
	case FilteringEndpointIndependent:
		return "endpoint-independent"
	case FilteringAddressDependent:
		return "address-dependent"
	case FilteringAddressAndPortDependent:
		return "address-and-port-dependent"
	}
	return "unknown"
}

// STUNResult is one STUN server's answer in a NATReport.
type STUNResult struct {
	Server  netip.AddrPort
	Mapped  netip.AddrPort // invalid if Err is set
	Latency time.Duration  // first request to response
	Err     error
}

// NATReport is the result of Netcheck.
type NATReport struct {
	// UDP is true if at least one STUN server answered. False means UDP
	// is blocked (or every server is down): only a relay over another
	// transport could help.
	UDP bool

	// Public lists the distinct mapped addresses seen, in the order of
	// Servers: one with endpoint-independent mapping, several without.
	Public []netip.AddrPort

	Mapping   Mapping
	Filtering Filtering

	// MappingNote and FilteringNote say why the behaviour is unknown (or
	// qualify it).
	MappingNote   string
	FilteringNote string

	// Servers has one result per NetcheckConfig.STUN entry, in order.
	Servers []STUNResult
}

// Kind is the classic name of the NAT: "open internet", "full cone",
// "restricted cone", "port-restricted cone", "symmetric", "UDP blocked",
// or "" when it cannot be named.
func (r *NATReport) Kind() string {
	switch {
	case !r.UDP:
		return "UDP blocked"
	case r.Mapping == MappingEndpointDependent:
		return "symmetric"
	case r.Mapping == MappingNone:
		if r.Filtering == FilteringEndpointIndependent {
			return "open internet"
		}
		if r.Filtering != FilteringUnknown {
			return "no NAT, firewalled"
		}
		return "no NAT"
	case r.Mapping != MappingEndpointIndependent:
		return ""
	}
	switch r.Filtering {
	case FilteringEndpointIndependent:
		return "full cone"
	case FilteringAddressDependent:
		return "restricted cone"
	case FilteringAddressAndPortDependent:
		return "port-restricted cone"
	}
	return ""
}

// String is a one-line summary, e.g. "mapping: endpoint-independent,
// filtering: address-and-port-dependent (port-restricted cone), public
// 203.0.113.5:41641; latency 203.0.113.1:3478 1.2ms, ...".
func (r *NATReport) String() string {
	var b strings.Builder
	if !r.UDP {
		fmt.Fprintf(&b, "UDP blocked: no reply from any of %d STUN servers", len(r.Servers))
		if len(r.Servers) > 0 && r.Servers[0].Err != nil {
			fmt.Fprintf(&b, " (%v)", r.Servers[0].Err)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "mapping: %v", r.Mapping)
	if r.Mapping == MappingUnknown && r.MappingNote != "" {
		fmt.Fprintf(&b, " (%s)", r.MappingNote)
	}
	fmt.Fprintf(&b, ", filtering: %v", r.Filtering)
	if k := r.Kind(); k != "" {
		fmt.Fprintf(&b, " (%s)", k)
	} else if r.Filtering == FilteringUnknown && r.FilteringNote != "" {
		fmt.Fprintf(&b, " (%s)", r.FilteringNote)
	}
	pub := make([]string, len(r.Public))
	for i, p := range r.Public {
		pub[i] = p.String()
	}
	fmt.Fprintf(&b, ", public %s", strings.Join(pub, " "))
	var lat []string
	for _, s := range r.Servers {
		if s.Err != nil {
			lat = append(lat, fmt.Sprintf("%v no reply", s.Server))
		} else {
			lat = append(lat, fmt.Sprintf("%v %v", s.Server, s.Latency.Round(100*time.Microsecond)))
		}
	}
	fmt.Fprintf(&b, "; latency %s", strings.Join(lat, ", "))
	return b.String()
}

// Netcheck finds the public address(es) of the shared socket and the
// behaviour of the NAT in front of it, asking cfg.STUN in parallel and then
// cfg.Probers in turn. It returns an error only for a bad configuration, a
// closed Conn or a done ctx; what the network does, including blocking UDP,
// is in the report.
func (c *Conn) Netcheck(ctx context.Context, cfg NetcheckConfig) (*NATReport, error) {
	if len(cfg.STUN) == 0 {
		return nil, errors.New("nat netcheck: no STUN servers configured; list at least two (any public weft node answers STUN)")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultNetcheckTimeout
	}
	if cfg.ProbeWait <= 0 {
		cfg.ProbeWait = DefaultProbeWait
	}
	r := &NATReport{Servers: make([]STUNResult, len(cfg.STUN))}
	var wg sync.WaitGroup
	for i, s := range cfg.STUN {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			defer cancel()
			res, err := c.stunRequest(sctx, s)
			r.Servers[i] = STUNResult{Server: unmapAddrPort(s), Mapped: res.mapped, Latency: res.rtt, Err: err}
		})
	}
	wg.Wait()
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nat netcheck: %w", err)
	}
	c.classifyMapping(r, cfg.LocalAddrs)
	if !r.UDP {
		r.FilteringNote = "UDP is blocked"
		return r, nil
	}
	if cfg.Mapped != nil && len(cfg.Probers) > 0 {
		early := *r
		early.FilteringNote = "filtering probes not done yet"
		cfg.Mapped(&early)
	}
	if err := c.classifyFiltering(ctx, r, &cfg); err != nil {
		return nil, err
	}
	return r, nil
}

// classifyMapping fills UDP, Public and Mapping from the STUN results.
func (c *Conn) classifyMapping(r *NATReport, localAddrs func() ([]netip.Addr, error)) {
	byIP := map[netip.Addr]netip.AddrPort{} // server IP -> mapped address seen
	for _, s := range r.Servers {
		if s.Err != nil {
			continue
		}
		r.UDP = true
		if !slices.Contains(r.Public, s.Mapped) {
			r.Public = append(r.Public, s.Mapped)
		}
		byIP[s.Server.Addr()] = s.Mapped
	}
	if !r.UDP {
		r.MappingNote = "no STUN server answered"
		return
	}
	if len(r.Public) == 1 && r.Public[0].Port() == c.local.Port() && c.isLocal(r.Public[0].Addr(), localAddrs) {
		r.Mapping = MappingNone
		return
	}
	switch {
	case len(r.Public) > 1:
		r.Mapping = MappingEndpointDependent
	case len(byIP) > 1:
		r.Mapping = MappingEndpointIndependent
	default:
		r.MappingNote = "answers from one STUN server address only; two are needed"
	}
}

// isLocal reports whether ip is one of the host's own addresses.
func (c *Conn) isLocal(ip netip.Addr, localAddrs func() ([]netip.Addr, error)) bool {
	if a := c.local.Addr(); a.IsValid() && !a.IsUnspecified() {
		return a.Unmap() == ip
	}
	var addrs []netip.Addr
	if localAddrs != nil {
		var err error
		if addrs, err = localAddrs(); err != nil {
			c.log.Debug("netcheck: local addresses", "err", err)
			return false
		}
	} else {
		ifas, err := net.InterfaceAddrs()
		if err != nil {
			c.log.Debug("netcheck: local addresses", "err", err)
			return false
		}
		for _, ifa := range ifas {
			if p, err := netip.ParsePrefix(ifa.String()); err == nil {
				addrs = append(addrs, p.Addr())
			}
		}
	}
	for _, a := range addrs {
		if a.Unmap() == ip {
			return true
		}
	}
	return false
}

// classifyFiltering runs the probes and fills Filtering. Only ctx ending
// or the Conn closing is an error.
func (c *Conn) classifyFiltering(ctx context.Context, r *NATReport, cfg *NetcheckConfig) error {
	if len(cfg.Probers) == 0 {
		r.FilteringNote = "no probers configured"
		return nil
	}
	// Everything this netcheck sent to: the NAT may admit these for that.
	var avoid []netip.Addr
	for _, s := range r.Servers {
		avoid = appendUnique(avoid, s.Server.Addr())
	}
	for _, p := range cfg.Probers {
		avoid = appendUnique(avoid, unmapAddrPort(p.Addr).Addr())
	}
	if len(avoid) > maxProbeAvoid {
		avoid = avoid[:maxProbeAvoid]
	}
	var notes []string
	for _, p := range cfg.Probers {
		p.Addr = unmapAddrPort(p.Addr)
		f, note, err := c.probeFiltering(ctx, p, avoid, cfg)
		if err != nil {
			return err
		}
		if f != FilteringUnknown {
			r.Filtering, r.FilteringNote = f, note
			return nil
		}
		notes = append(notes, note)
	}
	r.FilteringNote = strings.Join(notes, "; ")
	return nil
}

// probeFiltering asks one prober for a change-IP and, if that probe does
// not arrive, a change-port probe.
func (c *Conn) probeFiltering(ctx context.Context, p Peer, avoid []netip.Addr, cfg *NetcheckConfig) (Filtering, string, error) {
	fail := func(err error) (Filtering, string, error) {
		if c.closed.Load() {
			return 0, "", ErrClosed
		}
		if ctx.Err() != nil {
			return 0, "", fmt.Errorf("nat netcheck: %w", ctx.Err())
		}
		return FilteringUnknown, fmt.Sprintf("prober %v: %v", p.Addr, err), nil
	}
	ipRes, ipErr := c.requestProbe(ctx, p, probeChangeIP, avoid, cfg.Timeout, cfg.ProbeWait)
	if ipErr == nil && ipRes.got {
		if slices.Contains(avoid, ipRes.from.Addr()) {
			// A helper at an address we contacted: proves nothing.
			ipErr = fmt.Errorf("change-IP probe came from %v, an address this netcheck contacted", ipRes.from)
		} else {
			return FilteringEndpointIndependent, "", nil
		}
	}
	portRes, portErr := c.requestProbe(ctx, p, probeChangePort, avoid, cfg.Timeout, cfg.ProbeWait)
	if portErr != nil {
		if ipErr != nil {
			return fail(fmt.Errorf("change-IP: %v; change-port: %v", ipErr, portErr))
		}
		return fail(fmt.Errorf("change-IP probe did not arrive, change-port: %v", portErr))
	}
	if !portRes.got {
		// Not even the prober's own address, from another port.
		return FilteringAddressAndPortDependent, "", nil
	}
	if portRes.from.Addr() != p.Addr.Addr() || portRes.from.Port() == p.Addr.Port() {
		return fail(fmt.Errorf("change-port probe came from %v, not another port of %v", portRes.from, p.Addr.Addr()))
	}
	if ipErr != nil {
		return fail(fmt.Errorf("change-port probe arrived (endpoint-independent or address-dependent), change-IP failed: %v", ipErr))
	}
	return FilteringAddressDependent, "", nil
}

func appendUnique(s []netip.Addr, a netip.Addr) []netip.Addr {
	if slices.Contains(s, a) {
		return s
	}
	return append(s, a)
}
