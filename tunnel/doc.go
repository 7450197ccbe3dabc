// Package tunnel runs weft's WireGuard data plane: one wireguard-go device
// per node, fed by a conn.Bind (from package nat, over the node's one shared
// UDP socket) and a tun.Device (from package netstack in userspace mode, or
// package platform in kernel TUN mode). The package sees nothing else: it
// knows neither certificates nor records, only public keys, endpoints and the
// allowed IPs that the layer above derived from verified records.
//
// Decisions:
//   - The device is configured only through its UAPI (IpcSet), the same
//     surface `wg` uses, so the running configuration can always be read back
//     with IpcGet and nothing depends on wireguard-go internals.
//   - Allowed IPs are exactly the peer's overlay /128 and /32. wireguard-go
//     enforces cryptokey routing on receive: a decrypted packet whose source
//     address is not inside the sending peer's allowed IPs is dropped. The
//     device logs each such drop; the logger adapter here counts them
//     (Stats.SpoofedDrops) so tests and metrics can see the refusal.
//   - Peers have a persistent keepalive by default (25 s) so NAT bindings on
//     the path stay open while the peer is configured.
package tunnel
