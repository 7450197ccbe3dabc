// Package ice runs ICE (RFC 8445, with pion/ice) between weft nodes over
// the node's one shared UDP socket, which it does not own.
//
// # The seam
//
// A Mux is given a send function and the socket's local address
// (Config). The socket's owner (nat.Conn) classifies each received
// datagram on its first bytes and hands every STUN packet (IsSTUN: magic
// cookie 0x2112A442 at bytes 4..8, top two bits clear) to Mux.Deliver
// first. Deliver claims, without blocking, only what belongs to ICE:
// connectivity checks whose USERNAME names one of its sessions, responses
// to requests it sent, and indications from addresses it talks to. What it
// declines (plain binding requests to the node's STUN server, answers to
// netcheck's STUN client) stays with the caller. WireGuard packets never
// pass through the Mux or pion.
//
// Inside, a net.PacketConn adapter (reads fed by Deliver through a bounded
// queue, writes to Config.Send) carries pion's UniversalUDPMux, so host
// candidates are the shared socket's addresses and server-reflexive
// candidates are learnt over the shared socket: the NAT mapping WireGuard
// uses.
//
// # Sessions
//
// One Session is one pion agent, the connection attempt to one peer:
//
//	s, _ := mux.NewSession(ice.SessionConfig{Controlling: true, OnPacket: fromRelay})
//	d, _ := s.LocalDescription()   // waits for gathering, bounded
//	offer, _ := d.MarshalBinary()  // ≤ 499 bytes, sealed in a control message
//	...                            // the peer answers the same way
//	path, err := s.Connect(ctx, answer)
//
// The controlling side (the one that sends the offer) nominates; the
// other side calls Connect with Controlling false. Connect returns the
// selected pair as a Path. After that pion keeps the pair alive with
// consent checks every 2 s; Session.OnPathChange hears about later
// switches, and about loss (the zero Path).
//
// # WireGuard on the selected path
//
// If Path.SharedSocket (the local candidate is host, srflx or prflx),
// WireGuard sends from the shared socket to Path.Remote and receives from
// it as from any endpoint: nothing else is needed.
//
// If the local candidate is a relay (a TURN allocation), packets must go
// through the allocation: the Bind sends with Session.Write and receives
// through SessionConfig.OnPacket. Each relay candidate's TURN client runs
// on its own ephemeral UDP socket (pion's gatherer opens it), not on the
// shared socket: a TURN server keys allocations by the client's 5-tuple,
// so per-peer allocations cannot share one source port. Once pion has
// bound a channel to the remote address, Session.Write frames ChannelData
// itself and the allocation's socket hands ChannelData from that channel
// to OnPacket, past pion's agent and TURN client (turnfast.go). When only
// the remote candidate is a relay, Path.SharedSocket is true: WireGuard
// sends from the shared socket to the peer's relayed address.
//
// TURN servers come from the Mux (Config.TURN, for every session) and
// from each session (SessionConfig.TURN): weft relays hand out credentials
// that expire, so the node gathers them per connect. pion refreshes an
// allocation with the credential its session started with; a session
// whose path runs through its own allocation must be replaced by a new
// one before that credential expires.
//
// Upgrading a relayed path to a direct one takes a new Session (a fresh
// offer and answer, an ICE restart): pion does not re-check pairs that
// failed, so a Session never upgrades on its own once its direct pairs
// have failed.
package ice
