package dns

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/weft-net/weft/addr"
)

const headerLen = 12

// origin says where a reply came from, for the counters.
type origin uint8

const (
	fromServer  origin = iota // protocol errors, refusals
	fromOverlay               // the overlay zone: names, IDs, apex, PTR
	fromForward               // an upstream
)

// HandleQuery answers one DNS query in wire format from src and returns the
// reply in wire format, or nil when the packet must be dropped (shorter than
// a DNS header, or a response rather than a query). tcp selects the reply
// size limit: 64 KiB, instead of 512 bytes or the client's EDNS(0) size up
// to MaxUDPSize with truncation. src decides whether non-overlay names may
// be forwarded (Config.AllowForward). HandleQuery is safe for concurrent
// use, never panics on any input, and returns when ctx is done or the
// lookups it needed have finished.
func (s *Server) HandleQuery(ctx context.Context, src netip.Addr, query []byte, tcp bool) []byte {
	if len(query) < headerLen || query[2]&0x80 != 0 {
		s.stats.dropped.Add(1)
		return nil
	}
	s.stats.queries.Add(1)
	req := new(mdns.Msg)
	if err := req.Unpack(query); err != nil {
		s.stats.formErr.Add(1)
		return headerReply(query, mdns.RcodeFormatError)
	}
	edns := singleOPT(req)
	m, from := s.answer(ctx, src, req, edns)
	return s.finish(query, m, from, edns, tcp)
}

// singleOPT returns the request's OPT record if it has exactly one, in the
// additional section, and nil otherwise.
func singleOPT(req *mdns.Msg) *mdns.OPT {
	var opt *mdns.OPT
	for _, rr := range req.Extra {
		if o, ok := rr.(*mdns.OPT); ok {
			if opt != nil {
				return nil
			}
			opt = o
		}
	}
	return opt
}

// answer builds the reply to a parsed query.
func (s *Server) answer(ctx context.Context, src netip.Addr, req *mdns.Msg, edns *mdns.OPT) (*mdns.Msg, origin) {
	if req.Opcode != mdns.OpcodeQuery {
		return s.rcodeReply(req, mdns.RcodeNotImplemented), fromServer
	}
	if len(req.Question) != 1 {
		return s.rcodeReply(req, mdns.RcodeFormatError), fromServer
	}
	opts := 0
	for _, rr := range req.Extra {
		if rr.Header().Rrtype == mdns.TypeOPT {
			opts++
		}
	}
	for _, rr := range append(req.Answer[:len(req.Answer):len(req.Answer)], req.Ns...) {
		if rr.Header().Rrtype == mdns.TypeOPT {
			opts = 2 // an OPT outside the additional section is as bad as two
		}
	}
	if opts > 1 {
		return s.rcodeReply(req, mdns.RcodeFormatError), fromServer
	}
	if edns != nil && edns.Version() != 0 {
		return s.rcodeReply(req, mdns.RcodeBadVers), fromServer
	}
	q := req.Question[0]
	switch q.Qtype {
	case mdns.TypeOPT:
		return s.rcodeReply(req, mdns.RcodeFormatError), fromServer
	case mdns.TypeAXFR, mdns.TypeIXFR:
		return s.rcodeReply(req, mdns.RcodeRefused), fromServer
	}

	now := s.now()
	key := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass, do: edns != nil && edns.Do()}
	if e := s.cache.get(key, now); e != nil {
		if e.forwarded && !s.mayForward(src) {
			return s.rcodeReply(req, mdns.RcodeRefused), fromServer
		}
		s.stats.cacheHits.Add(1)
		from := fromOverlay
		if e.forwarded {
			from = fromForward
		}
		return s.fromCache(req, e, now, src), from
	}

	rel, inZone := s.inZone(key.name)
	overlayClass := q.Qclass == mdns.ClassINET || q.Qclass == mdns.ClassANY
	if inZone {
		if !overlayClass {
			return s.rcodeReply(req, mdns.RcodeRefused), fromServer
		}
		return s.overlay(ctx, src, req, key, rel), fromOverlay
	}
	if overlayClass && isReverseName(key.name) {
		if m := s.reverse(ctx, src, req, key); m != nil {
			return m, fromOverlay
		}
	}
	return s.forward(ctx, src, req, key), fromForward
}

// finish adds the OPT record, counts the reply, fits it to the transport
// and packs it.
func (s *Server) finish(query []byte, m *mdns.Msg, from origin, edns *mdns.OPT, tcp bool) []byte {
	limit := mdns.MinMsgSize
	if edns != nil {
		o := &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}}
		o.SetUDPSize(MaxUDPSize)
		if edns.Do() {
			o.SetDo()
		}
		m.Extra = append(m.Extra, o)
		limit = min(max(int(edns.UDPSize()), mdns.MinMsgSize), MaxUDPSize)
	}
	if tcp {
		limit = mdns.MaxMsgSize
	}
	switch m.Rcode {
	case mdns.RcodeSuccess:
		if from == fromOverlay {
			s.stats.overlayHits.Add(1)
		}
	case mdns.RcodeNameError:
		s.stats.nxdomain.Add(1)
	case mdns.RcodeServerFailure:
		s.stats.servFail.Add(1)
	case mdns.RcodeFormatError:
		s.stats.formErr.Add(1)
	case mdns.RcodeRefused:
		s.stats.refused.Add(1)
	case mdns.RcodeNotImplemented:
		s.stats.notImp.Add(1)
	}
	m.Truncate(limit)
	b, err := m.Pack()
	if err != nil {
		s.log.Debug("reply does not pack", "q", m.Question, "err", err)
		s.stats.servFail.Add(1)
		return headerReply(query, mdns.RcodeServerFailure)
	}
	return b
}

// headerReply answers a query whose body may not parse with only a header:
// its ID, opcode and RD bit, QR set, the given rcode and no records.
func headerReply(query []byte, rcode int) []byte {
	b := make([]byte, headerLen)
	copy(b[:2], query[:2])
	b[2] = 0x80 | query[2]&0x79 // QR, opcode, RD
	b[3] = byte(rcode & 0xf)
	return b
}

// rcodeReply is an empty reply with rcode.
func (s *Server) rcodeReply(req *mdns.Msg, rcode int) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetRcode(req, rcode)
	m.Opcode = req.Opcode
	return m
}

// inZone reports whether the lowercase FQDN name is in the overlay domain,
// and returns the part before the domain ("api", "<hex>.<hex>.id", "" for
// the apex) without the separating dot.
func (s *Server) inZone(name string) (string, bool) {
	if name == s.zone {
		return "", true
	}
	rel, ok := strings.CutSuffix(name, "."+s.zone)
	if !ok {
		return "", false
	}
	// The dot before the domain must separate labels, not be an escaped
	// "\." inside a label of some other zone.
	bs := 0
	for i := len(rel) - 1; i >= 0 && rel[i] == '\\'; i-- {
		bs++
	}
	return rel, bs%2 == 0
}

// overlay answers a question inside the overlay domain.
func (s *Server) overlay(ctx context.Context, src netip.Addr, req *mdns.Msg, key cacheKey, rel string) *mdns.Msg {
	q := req.Question[0]
	m := s.authReply(req, src)
	switch rel {
	case "": // the apex
		switch q.Qtype {
		case mdns.TypeSOA:
			soa := s.soa(s.zone)
			soa.Hdr.Name = q.Name
			m.Answer = []mdns.RR{soa}
		case mdns.TypeNS:
			m.Answer = []mdns.RR{&mdns.NS{Hdr: s.hdr(q.Name, mdns.TypeNS, s.maxTTL), Ns: s.zone}}
		default:
			m.Ns = []mdns.RR{s.soa(s.zone)}
		}
		return m
	case "id": // an empty non-terminal: exists, holds nothing
		m.Ns = []mdns.RR{s.soa(s.zone)}
		return m
	}

	gen := s.cache.generation()
	domain := strings.TrimSuffix(s.zone, ".")
	var (
		wantID addr.NodeID // for the ID form, to cross-check the answer
		name   string      // what the Resolver is asked
		tag    string      // for Invalidate
	)
	if id, ok := idFromRel(rel); ok {
		wantID, _ = addr.ParseNodeID(id)
		name, tag = id+".id."+domain, id
	} else if addr.CheckName(rel) == nil {
		name, tag = rel+"."+domain, rel
	} else {
		return s.negative(m, key, []string{rel}, s.zone, gen)
	}

	rctx, cancel := context.WithTimeout(ctx, s.resTimeout)
	ans, err := s.resolver.ResolveName(rctx, name)
	cancel()
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return s.negative(m, key, []string{tag}, s.zone, gen)
		}
		s.log.Debug("resolve failed", "name", name, "err", err)
		return s.rcodeReply(req, mdns.RcodeServerFailure)
	}
	if !wantID.IsZero() && !ans.NodeID.IsZero() && ans.NodeID != wantID {
		s.log.Warn("resolver answered for another node", "asked", wantID.Short(), "got", ans.NodeID.Short())
		return s.rcodeReply(req, mdns.RcodeServerFailure)
	}
	ttl := s.ttl(ans.TTL)
	switch {
	case q.Qtype == mdns.TypeA && ans.IPv4.Unmap().Is4():
		m.Answer = []mdns.RR{&mdns.A{Hdr: s.hdr(q.Name, mdns.TypeA, ttl), A: ans.IPv4.Unmap().AsSlice()}}
	case q.Qtype == mdns.TypeAAAA && ans.IPv6.Is6() && !ans.IPv6.Is4In6():
		m.Answer = []mdns.RR{&mdns.AAAA{Hdr: s.hdr(q.Name, mdns.TypeAAAA, ttl), AAAA: ans.IPv6.WithZone("").AsSlice()}}
	default:
		m.Ns = []mdns.RR{s.soa(s.zone)}
		ttl = s.negTTL
	}
	s.store(key, m, ttl, false, append(answerTags(ans), tag), gen)
	return m
}

// reverse answers a PTR-zone question for an overlay address, or returns
// nil when the question is not for one and must be forwarded.
func (s *Server) reverse(ctx context.Context, src netip.Addr, req *mdns.Msg, key cacheKey) *mdns.Msg {
	ip, ok := parseReverseName(key.name)
	if !ok {
		return nil
	}
	zone := key.name // with no Prefixes, the SOA of a NODATA names the address itself
	if len(s.prefixes) > 0 {
		zone = ""
		for _, p := range s.prefixes {
			if p.Contains(ip) {
				zone = reverseZone(p)
				break
			}
		}
		if zone == "" {
			return nil
		}
	}
	q := req.Question[0]
	gen := s.cache.generation()
	rctx, cancel := context.WithTimeout(ctx, s.resTimeout)
	ans, err := s.resolver.ResolveAddr(rctx, ip)
	cancel()
	m := s.authReply(req, src)
	if err != nil {
		switch {
		case !errors.Is(err, ErrNotFound):
			s.log.Debug("reverse resolve failed", "addr", ip, "err", err)
			return s.rcodeReply(req, mdns.RcodeServerFailure)
		case len(s.prefixes) == 0:
			return nil // not ours after all
		}
		return s.negative(m, key, []string{ip.String()}, zone, gen)
	}
	var target string
	switch {
	case addr.CheckName(ans.Name) == nil:
		target = ans.Name + "." + s.zone
	case !ans.NodeID.IsZero():
		target = IDName(ans.NodeID, s.zone)
	default:
		s.log.Debug("resolver answered an address with neither name nor node ID", "addr", ip)
		return s.rcodeReply(req, mdns.RcodeServerFailure)
	}
	ttl := s.ttl(ans.TTL)
	if q.Qtype == mdns.TypePTR {
		m.Answer = []mdns.RR{&mdns.PTR{Hdr: s.hdr(q.Name, mdns.TypePTR, ttl), Ptr: target}}
	} else {
		m.Ns = []mdns.RR{s.soa(zone)}
		ttl = s.negTTL
	}
	s.store(key, m, ttl, false, append(answerTags(ans), ip.String()), gen)
	return m
}

// negative turns m into NXDOMAIN with zone's SOA and caches it.
func (s *Server) negative(m *mdns.Msg, key cacheKey, tags []string, zone string, gen uint64) *mdns.Msg {
	m.Rcode = mdns.RcodeNameError
	m.Ns = []mdns.RR{s.soa(zone)}
	s.store(key, m, s.negTTL, false, tags, gen)
	return m
}

// authReply starts an authoritative NOERROR reply to req.
func (s *Server) authReply(req *mdns.Msg, src netip.Addr) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = s.mayForward(src)
	return m
}

// mayForward reports whether src may use the upstreams.
func (s *Server) mayForward(src netip.Addr) bool {
	return len(s.upstreams) > 0 && src.IsValid() && s.allow(src)
}

// soa returns the SOA record of an overlay zone (the domain, or a reverse
// zone), whose TTL and MINIMUM are the negative TTL.
func (s *Server) soa(zone string) *mdns.SOA {
	ttl := ttlSeconds(s.negTTL)
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: zone, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: ttl},
		Ns:      s.zone,
		Mbox:    "hostmaster." + s.zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  ttl,
	}
}

func (s *Server) hdr(name string, rrtype uint16, ttl time.Duration) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: rrtype, Class: mdns.ClassINET, Ttl: ttlSeconds(ttl)}
}

// ttl applies DefaultTTL and MaxTTL to an Answer's TTL.
func (s *Server) ttl(d time.Duration) time.Duration {
	if d <= 0 {
		d = DefaultTTL
	}
	return min(d, s.maxTTL)
}

// ttlSeconds rounds d up to whole seconds, at least one.
func ttlSeconds(d time.Duration) uint32 {
	secs := (d + time.Second - 1) / time.Second
	return uint32(min(max(secs, 1), 1<<31-1))
}

// answerTags are the Invalidate tags of a node's answer.
func answerTags(a Answer) []string {
	var tags []string
	if a.Name != "" {
		tags = append(tags, strings.ToLower(a.Name))
	}
	if !a.NodeID.IsZero() {
		tags = append(tags, a.NodeID.String())
	}
	for _, ip := range []netip.Addr{a.IPv4, a.IPv6} {
		if ip.IsValid() {
			tags = append(tags, ip.WithZone("").String())
		}
	}
	return tags
}

// IDName returns the DNS name of a node ID in domain: the ID's 64 hex
// digits as two labels of 32 (a DNS label holds at most 63 bytes), then
// "id" and the domain, e.g. "0123…cdef.0123…cdef.id.weft.internal". A
// trailing dot on domain is kept.
func IDName(id addr.NodeID, domain string) string {
	h := id.String()
	return h[:32] + "." + h[32:] + ".id." + domain
}

// idFromRel returns the 64 hex digits of a node ID from the part of a
// name before the domain: "<32 hex>.<32 hex>.id" as served in DNS, or
// "<64 hex>.id" as package weft writes it (only possible outside DNS).
func idFromRel(rel string) (string, bool) {
	body, ok := strings.CutSuffix(rel, ".id")
	if !ok {
		return "", false
	}
	if len(body) == 65 && body[32] == '.' {
		body = body[:32] + body[33:]
	}
	return body, isHexID(body)
}

// isHexID reports whether s is 64 lowercase hex digits.
func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// store caches a copy of reply m for ttl.
func (s *Server) store(key cacheKey, m *mdns.Msg, ttl time.Duration, forwarded bool, tags []string, gen uint64) {
	if s.cache.max <= 0 || ttl <= 0 {
		return
	}
	now := s.now()
	c := &mdns.Msg{
		MsgHdr: mdns.MsgHdr{Rcode: m.Rcode, Authoritative: m.Authoritative, AuthenticatedData: m.AuthenticatedData},
		Answer: copyRRs(m.Answer, 0, "", ""),
		Ns:     copyRRs(m.Ns, 0, "", ""),
		Extra:  copyRRs(m.Extra, 0, "", ""),
	}
	s.cache.put(&cacheEntry{
		key:       key,
		msg:       c,
		stored:    now,
		expires:   now.Add(ttl),
		forwarded: forwarded,
		tags:      tags,
	}, gen)
}

// fromCache builds the reply to req from a cache entry, with TTLs counted
// down and the question's spelling of the name.
func (s *Server) fromCache(req *mdns.Msg, e *cacheEntry, now time.Time, src netip.Addr) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Rcode = e.msg.Rcode
	m.Authoritative = e.msg.Authoritative
	m.AuthenticatedData = e.msg.AuthenticatedData
	m.RecursionAvailable = s.mayForward(src)
	elapsed := uint32(min(max(now.Sub(e.stored)/time.Second, 0), 1<<31-1))
	qname := req.Question[0].Name
	m.Answer = copyRRs(e.msg.Answer, elapsed, e.key.name, qname)
	m.Ns = copyRRs(e.msg.Ns, elapsed, e.key.name, qname)
	m.Extra = copyRRs(e.msg.Extra, elapsed, e.key.name, qname)
	return m
}

// copyRRs deep-copies rrs (never an OPT), subtracting elapsed seconds from
// each TTL and renaming owners equal to from (case-insensitively) to to.
func copyRRs(rrs []mdns.RR, elapsed uint32, from, to string) []mdns.RR {
	if len(rrs) == 0 {
		return nil
	}
	out := make([]mdns.RR, 0, len(rrs))
	for _, rr := range rrs {
		if rr == nil || rr.Header().Rrtype == mdns.TypeOPT {
			continue
		}
		c := mdns.Copy(rr)
		h := c.Header()
		h.Ttl -= min(h.Ttl, elapsed)
		if from != "" && strings.EqualFold(h.Name, from) {
			h.Name = to
		}
		out = append(out, c)
	}
	return out
}
