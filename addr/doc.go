// Package addr defines weft's identifiers and overlay addresses: the NodeID
// and NetworkID types, derivation of a node's overlay IPv6 and IPv4
// addresses, and validation of node names and DNS domains.
//
// It is the leaf of weft's import graph (cmd → weft → {tunnel, netstack,
// platform, dns} → {nat, dht} → trust → addr) and imports only the standard
// library.
//
// # Design decisions
//
//   - A NodeID is the SHA-256 of the node's Ed25519 public key and a NetworkID
//     is the SHA-256 of the network's genesis (computed in package trust). Both
//     print as 64 lowercase hex digits; Short prints the first 12 for humans.
//     Parsing accepts either case but always prints lowercase.
//
//   - IPv6 overlay addresses are RFC 4193 unique local addresses. The /48
//     prefix is fd00::/8 followed by the first 40 bits (5 bytes) of the
//     NetworkID, so every network gets its own prefix and nobody can choose
//     it. Subnet 0 is used. The interface ID is the first 8 bytes of
//     SHA-256("weft-iid-v1" || NodeID). Anyone holding a NodeID can therefore
//     check that an address belongs to it (CheckIPv6); nothing is allocated.
//
//   - IPv4 overlay addresses cannot be derived collision-free from a 32-byte
//     ID in a /10, so an anchor chooses them at admission: attempt k uses the
//     first 4 bytes of SHA-256(NodeID || uint32be(k)) modulo the number of
//     usable hosts, skipping the network and broadcast addresses. Callers
//     probe k = 0, 1, 2, … until they find a free address. The result is
//     written into the membership certificate, which is what peers trust.
//     Prefixes must be IPv4, masked, and between /8 and /30.
//
//   - Node names are single DNS labels (RFC 1035 / RFC 1123 host names):
//     1..63 characters from a-z, 0-9 and '-', not starting or ending with
//     '-'. Upper case is rejected rather than folded so that a name has one
//     spelling everywhere (certificates, DHT keys, DNS). Domains are one or
//     more such labels joined by '.', at most 253 characters, without a
//     trailing dot.
package addr
