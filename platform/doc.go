// Package platform brings up weft's kernel TUN interface and points the OS
// resolver at weft's DNS server for the overlay domain. It provides a
// tun.Device to package tunnel, exactly as package netstack does in userspace
// mode.
//
// # TUN (Linux)
//
// CreateTUN creates the interface with wireguard-go's tun.CreateTUN, which
// turns on the virtio-net header (TCP and, on Linux 6.2+, UDP segmentation
// offload) when the kernel accepts it, and then configures it through netlink
// — never by running ip(8): MTU, addresses (IPv6 ones with IFA_F_NODAD so they
// can be used at once), link up, extra routes. The prefix of each address is
// the on-link route for the whole overlay, so a node needs no per-peer routes.
//
// An interface that already carries the name is handled like this: a TUN is
// a leftover of a run that crashed (or a persistent one somebody created), so
// it is deleted with a warning and created afresh; anything else (a dummy, a
// bridge, a real NIC) is refused, since it is not weft's to delete.
//
// The interface is not persistent: the kernel deletes it, with its addresses
// and routes, when the last file descriptor closes, which also happens when
// the process dies. Close closes the device and then deletes whatever is
// still there (for instance, if someone made it persistent).
//
// The TUN remembers the network namespace it was created in (through its
// netlink socket), so Close works from any goroutine.
//
// # DNS
//
// ConfigureDNS gives the overlay domain to weft's DNS server:
//
//   - With systemd-resolved (org.freedesktop.resolve1 on the system bus) it
//     sets the interface's DNS servers and the routing-only domain
//     "~<domain>" over D-Bus, turns the link off as a default DNS route and
//     off for LLMNR, mDNS and DNSSEC: true split DNS. Close calls RevertLink.
//     There is nothing to recover after a crash, since resolved forgets a
//     link's settings when the kernel deletes the interface.
//   - Otherwise it rewrites /etc/resolv.conf: weft's server first, then the
//     original nameservers (up to the resolver's limit of three, so names
//     still resolve while weft is down), and the original search, domain,
//     options (without "rotate", which would bypass weft's server) and
//     sortlist lines. weft's server forwards every name outside the overlay
//     to the original upstreams, so this is split DNS in effect. The original
//     file (its bytes, mode, or the symlink and its target, or its absence)
//     is first saved atomically in StateDir/resolv.conf.weft-backup, and
//     Close puts it back exactly. If somebody else (a DHCP client, an
//     administrator) rewrote /etc/resolv.conf meanwhile, their version is
//     left alone. RecoverDNS does the same restore after a crash; ConfigureDNS
//     runs it first itself. Only one weft node per host may manage
//     resolv.conf: a second one is refused.
//
// SystemUpstreams tells weft's DNS server where to forward other names: the
// nameservers of /etc/resolv.conf, or of the saved original while weft's
// version is installed; where that is systemd-resolved's stub (127.0.0.53),
// resolved's real upstreams (from D-Bus, else /run/systemd/resolve/resolv.conf),
// keeping the stub only when neither can be read.
//
// # Other systems
//
// On other operating systems CreateTUN and ConfigureDNS return an error that
// matches errors.ErrUnsupported and tells the user to run in userspace mode;
// SystemUpstreams still reads /etc/resolv.conf where there is one.
package platform
