// Package dns is weft's overlay DNS server, built on github.com/miekg/dns
// for the wire format.
//
// It answers, authoritatively and from a Resolver the node injects (package
// dns never imports package weft):
//
//   - NAME.<domain> and <nodeid>.id.<domain>: A and AAAA of the node's
//     overlay addresses. Names are case-insensitive. A node ID is 64 hex
//     digits but a DNS label holds at most 63 bytes, so on the wire the ID
//     is split into two labels of 32 digits: <hex[:32]>.<hex[32:]>.id.<domain>
//     (IDName); the Resolver is handed the joined <64 hex>.id.<domain> form
//     that weft.Node.Resolve reads. A single label of the first 32 digits is
//     NXDOMAIN (shortened IDs are not searched). Other query
//     types for a name that exists (ANY included, following RFC 8482's
//     spirit) get NOERROR with an empty answer and the zone's SOA (NODATA).
//     "id" is therefore reserved and is never a node name. Names with more
//     labels, or labels that are not valid node names, are NXDOMAIN without
//     asking the Resolver.
//   - The zone apex <domain>: SOA and NS (both naming the apex itself: the
//     zone is only ever served locally, for split DNS, and never delegated).
//   - PTR in in-addr.arpa and ip6.arpa for overlay addresses, answered with
//     NAME.<domain>. (or the IDName of a node without a valid name). With Config.Prefixes set, reverse names inside those prefixes
//     are authoritative (NXDOMAIN when no node holds the address) and the
//     rest are forwarded; without it every complete reverse name is first
//     asked of Resolver.ResolveAddr, and forwarded if the address is unknown.
//   - Unknown overlay names: NXDOMAIN with the SOA in the authority section,
//     whose MINIMUM (and TTL) is Config.NegativeTTL (RFC 2308).
//
// Everything else is forwarded to Config.Upstreams in order (UDP with a
// fresh ID and source port per attempt, retried over TCP when truncated,
// next upstream after a timeout, SERVFAIL, REFUSED or a malformed reply;
// SERVFAIL when all fail). Forwarding is only offered to sources that
// Config.AllowForward accepts (by default loopback, private and overlay
// addresses), so the server is never an open resolver; other sources get
// REFUSED for non-overlay names. With no Upstreams every non-overlay name is
// REFUSED.
//
// Overlay TTLs are Answer.TTL (DefaultTTL when zero) capped at Config.MaxTTL
// (60 s by default) so that a revoked node or a changed record disappears
// from caches within a minute. Replies are cached in one bounded LRU cache
// keyed by (name, type, class, DO bit), positive and negative alike:
// overlay answers for their TTL, forwarded ones for the smallest TTL in the
// reply (or the SOA MINIMUM for negative replies), at most an hour, with
// TTLs counted down on the way out. Flush empties it; Invalidate drops every
// entry about one node (by name, node ID or address), and a lookup that was
// in flight during a Flush or Invalidate is not cached.
//
// Wire behaviour: only opcode QUERY is served (others NOTIMP); queries with
// other than one question, more than one OPT, or that do not parse get
// FORMERR when at least the header is readable, and packets shorter than a
// header or with the QR bit set are dropped silently (never answered, so
// the server cannot be bounced off another). EDNS(0) is echoed (UDP size
// MaxUDPSize, DO bit copied), EDNS versions other than 0 get BADVERS. UDP
// replies fit 512 bytes, or the client's advertised size up to MaxUDPSize
// (1232, the DNS flag day 2020 value); larger replies are truncated at a
// record boundary with TC set, so the client retries over TCP, where
// replies may use the full 64 KiB. Question case is echoed (DNS 0x20).
//
// HandleQuery is the whole server as a function from a query's bytes to a
// reply's bytes; ServeUDP, ServeTCP and ListenAndServe put it on sockets,
// and a userspace node can call it directly for packets its netstack
// receives.
package dns
