// Package weft is the embedding API of the weft overlay network, in the
// spirit of tsnet: a program calls Start with a state directory and gets a
// Node that can Dial, Listen and ListenPacket inside the overlay, resolve
// overlay names, and report its status. The weft CLI's daemon (`weft up`) is
// a thin shell around the same Node.
//
// A Node owns, in order of construction: its identity, genesis and membership
// certificate from the state directory (package trust); one UDP socket (package
// nat) carrying WireGuard and sealed control messages; a record store and
// a Kademlia DHT (package dht) for node records; a gVisor userspace stack (package
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
//   - Records are published in a Kademlia DHT (package dht) under four
//     keys (node ID, name and each overlay address), on the k nodes
//     closest to each, so names and bare overlay IPs both resolve. The node
//     owns the DHT and supplies its policy: Admit lets a contact into the
//     routing table only if its verified record names the contact's key
//     and is a server's (records come from what the node verified before,
//     else from a bounded background hello, so a hostile contact never
//     stalls a lookup); Identify maps a request's authenticated key to a
//     node the same way. Bootstrap nodes are only the way in.
//   - Reachable nodes are DHT servers, nodes behind NAT clients: with
//     DHTRoleAuto, a node asks a server to have two other nodes ping its
//     advertised endpoints unsolicited (msgReachCheck/Probe/Ping, reach.go)
//     and believes only a ping it receives. Clients name their rendezvous
//     servers in their record.
//   - Record sequence numbers are the publication time in nanoseconds, so a
//     restarted node always supersedes its previous record without keeping a
//     counter on disk.
package weft
