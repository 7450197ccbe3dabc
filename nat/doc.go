// Package nat owns a node's single UDP socket and everything that shares it.
//
// # One socket, demultiplexed
//
// Every weft node sends and receives all of its UDP traffic on one socket
// (Listen), so that a NAT binding opened by any of it serves all of it. One
// reader at a time reads batches of datagrams with recvmmsg (golang.org/x/net
// ipv4/ipv6 ReadBatch) and classifies each on its first bytes (RFC 7983
// style). While the Bind is open the reader is the Bind's ReceiveFunc
// caller; while it is closed, a background goroutine owned by the Conn (see
// receive.go for the handover):
//
//   - WireGuard: byte 0 in 1..4 and bytes 1..3 zero. Handed to the Bind.
//   - weft control: magic 0xF7 'w' 'f' 't'. Copied out and queued for the
//     control workers.
//   - STUN (magic cookie 0x2112A442 at bytes 4..8, top two bits of byte 0
//     clear): copied out and queued for the same workers (a queue of their
//     own), which route it to an outstanding transaction of ours, the
//     STUNHandler (ICE agents) or the plain Binding responder (stun.go).
//   - TURN ChannelData (byte 0 in 0x40..0x4F): reserved for the TURN
//     work; counted and dropped for now.
//   - Anything else: counted and dropped.
//
// Datagrams larger than MaxPacketSize are counted (Stats.Oversized) and
// dropped; the read buffers are MaxPacketSize+1 bytes so truncation is
// detectable on every platform (64 KiB with GRO, which holds any datagram).
//
// # The WireGuard Bind
//
// Bind returns a golang.zx2c4.com/wireguard/conn.Bind over the shared socket.
// Open does not bind anything: it returns the socket's port (a non-zero port
// different from it is an error, ErrPortMismatch) and one ReceiveFunc.
// While the Bind is open, that ReceiveFunc reads the socket itself, straight
// into the caller's buffers, as wireguard-go's StdNetBind does, and hands
// control packets read on the way to the control workers; so the socket is
// read only while WireGuard asks for packets (backpressure reaches the
// kernel socket buffer, like a plain socket), and an open Bind whose
// ReceiveFunc nobody calls stalls control traffic too. While the Bind is
// closed the background reader reads, and WireGuard packets are dropped and
// counted. Bind.Close never closes the socket, so control traffic continues
// and the Bind can be reopened (wireguard-go does Close+Open on every
// BindUpdate).
//
// Send uses sendmmsg (WriteBatch). Receive buffers, send message vectors and
// endpoints are pooled or interned: the Bind itself performs no per-packet
// allocation. (x/net's ReadBatch still allocates a *net.UDPAddr per received
// datagram; avoiding that would mean our own recvmmsg.)
//
// # UDP offloads (Linux)
//
// Where the kernel supports them, the socket uses UDP GRO and GSO as
// wireguard-go's own StdNetBind does. With UDP_GRO the kernel may hand the
// reader several datagrams of one flow as one buffer plus a segment size;
// the reader splits it and classifies every segment on its own, so a
// control packet that happens to be coalesced with WireGuard packets still
// goes to the control workers (Stats.CoalescedIn counts such reads). With
// UDP_SEGMENT, Bind.Send packs runs of equal-sized packets to one endpoint
// into single messages. If a send with GSO fails with EIO (a device that
// cannot checksum), GSO is turned off for the socket and the packets are
// sent again without it. Conn.Offloads reports what is in use.
//
// Endpoints are immutable *Endpoint values. Received endpoints are interned
// per source address by the readers, so a steady flow reuses one pointer.
// There is no sticky source address: the socket is bound by the Conn and the
// kernel picks the source.
//
// # Control RPC
//
// Control messages are request/response RPCs sealed with NaCl box
// (Curve25519, XSalsa20-Poly1305) between the two nodes' keys:
//
//	magic(4) ver(1) flags(1) senderPub(32) nonce(24) box(payload)
//	payload: type(1) txid(8) flags(1) body
//
// The header flag FlagPlain marks an unsealed packet; only MsgHello may be
// plain (CallHello), because its contents are public: the responder returns
// its signed node record and the caller learns the responder's key from it.
// The key reported by CallHello is NOT authenticated by this package; the
// caller must check that the returned record binds it. Plain packets of any
// other type are dropped (Stats.ControlPlainRefused).
//
// Shared keys are precomputed once per peer key and kept in a bounded cache
// (Config.KeyCacheSize, random eviction). A key is only cached after a
// packet sealed with it opened successfully, so garbage cannot evict real
// peers cheaply. Low-order Curve25519 public keys are refused.
//
// Call retransmits the identical packet with exponential backoff (200ms
// doubling to 3s) until a response with the same txid, sealed by the called
// key, arrives or ctx is done. Requests are not deduplicated: a lost response
// or a replayed packet runs the handler again, so handlers must be
// idempotent (weft's are: DHT stores are sequence-numbered, joins are
// idempotent per key).
//
// Handler work is rate-limited per source IP address (not port) with a token
// bucket (Config.RateLimit, Config.RateBurst). A request costs one token; a
// packet from a sender whose shared key is not cached costs its token before
// the Curve25519 operation. Responses to our own calls cost nothing. At most
// maxInflightHandlers handlers run at once; beyond that requests are
// dropped and counted, and the caller's retransmission tries again.
//
// # STUN and netcheck
//
// Every Conn answers STUN Binding requests that carry no ICE attributes
// with the request's source address (XOR-MAPPED-ADDRESS), SOFTWARE "weft"
// and FINGERPRINT, rate-limited per source IP (Config.STUNRateLimit), so
// every public node is a STUN server. SetSTUNHandler lets ICE agents see
// STUN first and claim their checks; an unclaimed ICE check is never
// answered. STUNBinding asks a STUN server for the socket's public
// mapping through the shared socket itself, so the answer is the mapping
// WireGuard uses. Netcheck (netcheck.go) combines Binding requests to
// several servers with filtering probes (MsgProbe, probe.go) into a
// NATReport: UDP blocked or not, public address(es), mapping and filtering
// behaviour, per-server latency. The STUN and probe decoders run pion/stun
// (github.com/pion/stun/v4, the version pion/ice/v4 uses).
//
// # Relays
//
// A node started with `weft up --relay` runs a TURN server (relay.go,
// pion/turn/v5: the version pion/ice/v4 uses) on a port of its own, UDP
// and TCP: NewRelay, RelayConfig. Only members allocate on it: a member
// asks the relay's node for credentials with a sealed MsgRelayCreds
// request (Conn.RelayCredentials; the relay's node answers once
// Conn.ServeRelay is set), the relay asks RelayConfig.Authorize about the
// request's authenticated sender key, and answers with an ephemeral TURN
// credential (username EXPIRY:KEYID, password an HMAC of it under the
// relay's secret) that its AuthHandler checks without keeping state.
// Quotas (allocations per node and in total), optional bandwidth caps and
// a peer address filter bound what a member can make the relay do.
// External TURN servers (coturn) are configured by URL: ParseTURNURL.
//
// # Lifetime
//
// Conn.Close is idempotent: it closes the socket, closes the Bind (its
// ReceiveFuncs return net.ErrClosed), fails pending calls with ErrClosed,
// cancels running handlers' contexts and waits for every goroutine the Conn
// started.
package nat
