package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// forward answers a non-overlay question from the upstreams, if src may
// use them.
func (s *Server) forward(ctx context.Context, src netip.Addr, req *mdns.Msg, key cacheKey) *mdns.Msg {
	if !s.mayForward(src) {
		return s.rcodeReply(req, mdns.RcodeRefused)
	}
	q := req.Question[0]
	out := new(mdns.Msg)
	out.RecursionDesired = req.RecursionDesired
	out.CheckingDisabled = req.CheckingDisabled
	out.Question = []mdns.Question{q}
	out.SetEdns0(MaxUDPSize, key.do)

	gen := s.cache.generation()
	s.stats.forwarded.Add(1)
	up, err := s.exchange(ctx, out)
	if err != nil {
		s.log.Debug("forwarding failed", "q", q.String(), "err", err)
		m := s.rcodeReply(req, mdns.RcodeServerFailure)
		m.RecursionAvailable = true
		return m
	}
	m := new(mdns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	m.Rcode = up.Rcode
	m.AuthenticatedData = up.AuthenticatedData && key.do
	m.Answer = up.Answer
	m.Ns = up.Ns
	m.Extra = copyRRs(up.Extra, 0, "", "") // without the upstream's OPT
	if m.Rcode == mdns.RcodeSuccess || m.Rcode == mdns.RcodeNameError {
		s.store(key, m, forwardTTL(up), true, []string{s.tagOf(key.name)}, gen)
	}
	return m
}

// exchange sends m to each upstream in turn and returns the first reply
// that answers the question (anything but SERVFAIL, REFUSED, NOTIMP,
// FORMERR or an extended rcode).
func (s *Server) exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	var errs []error
	for _, up := range s.upstreams {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		r, err := s.exchangeOne(ctx, m, up)
		if err == nil {
			switch r.Rcode {
			case mdns.RcodeSuccess, mdns.RcodeNameError:
				return r, nil
			default:
				err = fmt.Errorf("rcode %s", rcodeName(r.Rcode))
			}
		}
		errs = append(errs, fmt.Errorf("upstream %v: %w", up, err))
	}
	return nil, errors.Join(errs...)
}

// exchangeOne asks one upstream over UDP, and again over TCP if the reply
// is truncated, each attempt with its own UpstreamTimeout and a fresh ID.
func (s *Server) exchangeOne(ctx context.Context, m *mdns.Msg, up netip.AddrPort) (*mdns.Msg, error) {
	r, err := s.attempt(ctx, "udp", m, up)
	if err == nil && r.Truncated {
		r, err = s.attempt(ctx, "tcp", m, up)
		if err == nil && r.Truncated {
			err = errors.New("truncated reply over tcp")
		}
	}
	return r, err
}

func (s *Server) attempt(ctx context.Context, network string, m *mdns.Msg, up netip.AddrPort) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, s.upTimeout)
	defer cancel()
	c := &mdns.Client{Net: network, Timeout: s.upTimeout}
	conn, err := c.DialContext(ctx, up.String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // Close of the server, or the timeout
	defer stop()
	m.Id = mdns.Id()
	r, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", network, ctx.Err())
		}
		return nil, fmt.Errorf("%s: %w", network, err)
	}
	if len(r.Question) != 1 || !sameQuestion(r.Question[0], m.Question[0]) {
		return nil, fmt.Errorf("%s: reply for another question", network)
	}
	return r, nil
}

func sameQuestion(a, b mdns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

func rcodeName(rcode int) string {
	if s, ok := mdns.RcodeToString[rcode]; ok {
		return s
	}
	return fmt.Sprint(rcode)
}

// forwardTTL is how long a forwarded reply may be cached: the smallest TTL
// among its answer and authority records, or for a negative reply (no
// answer) the SOA's min(TTL, MINIMUM) (RFC 2308), capped at maxForwardTTL.
// Zero means do not cache.
func forwardTTL(r *mdns.Msg) time.Duration {
	var ttl uint32
	found := false
	if len(r.Answer) > 0 && r.Rcode == mdns.RcodeSuccess {
		for _, rrs := range [][]mdns.RR{r.Answer, r.Ns} {
			for _, rr := range rrs {
				if t := rr.Header().Ttl; !found || t < ttl {
					ttl, found = t, true
				}
			}
		}
	} else {
		for _, rr := range r.Ns {
			if soa, ok := rr.(*mdns.SOA); ok {
				ttl, found = min(soa.Hdr.Ttl, soa.Minttl), true
				break
			}
		}
	}
	if !found {
		return 0
	}
	return min(time.Duration(ttl)*time.Second, maxForwardTTL)
}
