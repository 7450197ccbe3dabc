// Package netstack is weft's userspace data plane: a gVisor TCP/IP stack
// exposed to wireguard-go as a tun.Device, so a node needs no root and no
// kernel interface. Programs reach the overlay through Stack.DialContext,
// ListenTCP and ListenUDP, and existing programs through the SOCKS5 and HTTP
// proxies (SOCKS5Server, HTTPProxy) and Expose, which forwards overlay
// connections to a local service.
//
// Design decisions:
//
//   - The stack is owned here rather than taken from wireguard-go's
//     tun/netstack (whose link code it adapts, MIT, see link.go) so it can be
//     tuned: SACK on, RACK loss detection off (gVisor's RACK takes tens of
//     seconds to recover from a burst loss), CUBIC, send buffers up to 6 MiB
//     and receive buffers up to 8 MiB with receive-buffer moderation.
//   - The outbound queue blocks the stack's writer when full instead of
//     dropping (a drop costs a retransmission and a congestion-window cut on
//     a path that has no real loss). The consequence: the device must be
//     read independently of being written, as wireguard-go does. Close
//     unblocks every writer.
//   - Device.Read returns up to batchSize (32) packets per call, copied
//     straight out of the packet buffers; Write injects a batch.
//   - gVisor software GSO was measured and left off: on the benchmark it was
//     slower than per-segment writes into the queue.
//   - TCP dial errors keep their errno (ECONNREFUSED, EHOSTUNREACH, ...) so
//     the proxies can map them to SOCKS5 reply codes and HTTP statuses.
//   - The proxies take a DialFunc (the node's resolver plus dialer) and pass
//     host names through unresolved, so clients can use overlay names
//     ("api", "api.weft.internal"). They have no authentication: bind them
//     to loopback.
//   - The HTTP proxy parses requests with net/http but forwards them itself,
//     one upstream connection per client connection, instead of using an
//     http.Transport: every goroutine belongs to the proxy and Close waits
//     for all of them.
//   - Stack.Close and Device().Close are the same operation: wireguard-go
//     closes its tun.Device when the WireGuard device closes.
package netstack
