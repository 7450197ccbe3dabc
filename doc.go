// Package weft is the embedding API of the weft overlay network, in the
// spirit of tsnet: a program calls Start with a state directory and gets a
// Node that can Dial, Listen and ListenPacket inside the overlay, resolve
// overlay names, and report its status. The weft CLI's daemon (`weft up`) is
// a thin shell around the same Node.
//
// A Node owns, in order of construction: its identity, genesis and membership
// certificate from the state directory (package trust); one UDP socket (package
// nat) carrying WireGuard and sealed control messages; a record store and
// client (package dht) for node records; a gVisor userspace stack (package
// netstack) as the TUN device; and the wireguard-go device (package tunnel).
//
// Decisions:
//   - Peers are added on demand. Before the first packet to a peer, the node
//     sends a sealed MsgConnect carrying its own signed node record to every
//     endpoint in the peer's record; the peer verifies the record against the
//     network's genesis, configures the caller as a WireGuard peer with the
//     observed source address as endpoint, and answers with its own record.
//     The first endpoint that answers becomes the WireGuard endpoint. This
//     exchange is where ICE signalling plugs in later.
//   - Records are published to every bootstrap node under three keys (node
//     ID, name and each overlay address), so names and bare overlay IPs both
//     resolve. Each node also serves FIND_VALUE/STORE itself, so any node can
//     be a bootstrap.
//   - Record sequence numbers are the publication time in nanoseconds, so a
//     restarted node always supersedes its previous record without keeping a
//     counter on disk.
package weft
