// Package natlab builds small network labs out of Linux network namespaces
// for end-to-end tests that run real binaries (weft, curl, dig, ssh, iperf3)
// the way users do.
//
// A Lab belongs to one test. It creates namespaces with names unique to the
// test process ("PREFIX-PID-RAND-SHORT"), so that parallel runs and the
// leftovers of crashed ones never collide, and it deletes them, with every
// process still inside them and their /etc/netns/NAME directory, when the
// test ends. A new Lab also removes the namespaces of earlier runs with the
// same prefix whose process is gone.
//
// Building blocks:
//
//   - Lab.Namespace: a namespace with loopback up.
//   - Lab.Veth: a veth pair between two namespaces, with addresses, up.
//   - Lab.Switch and Switch.Attach: a "public internet", a bridge in a
//     namespace of its own that any number of namespaces plug into.
//   - Namespace.IP, Namespace.AddAddr, Namespace.Sysctl: configuration.
//   - Namespace.SetResolvConf: /etc/netns/NAME/resolv.conf, which
//     `ip netns exec` bind-mounts over /etc/resolv.conf for the programs it
//     runs, so a program that rewrites its resolver configuration changes
//     the lab's file, never the host's.
//   - Namespace.Run, Namespace.MustRun, Namespace.Command: programs in the
//     namespace (through `ip netns exec`) with timeouts.
//   - Namespace.Start: a background program in its own process group,
//     killed when the test ends, its output captured. When the test fails
//     its last lines are logged and the whole output saved to a file under
//     a natlab-logs-* directory in $TMPDIR (Failures names the tests and
//     the directory, for a TestMain to print last); NATLAB_VERBOSE=1 logs
//     all of it, always.
//   - Namespace.Listen, Namespace.ListenPacket, Namespace.DialContext: sockets
//     of the test process itself inside the namespace, for servers and
//     clients written in Go (a fake DNS upstream, an HTTP server).
//     Namespace.Do runs any code that opens sockets (nat.Listen) there.
//   - Lab.Router: a NAT router of a given NATType (FullCone,
//     AddressRestricted, PortRestricted, Symmetric, UDPBlocked) between a
//     Switch and a LAN bridge, made of nftables rules; Router.Host,
//     Attach, Detach and Move put hosts on its LAN and move them between
//     LANs; Router.FlushMappings forgets every mapping (conntrack and the
//     learned sets), as a NAT reboot would. router_linux.go documents how
//     each type is built and why.
//     With RouterConfig.PortMapping the router also offers NAT-PMP port
//     mapping (RFC 6886) at its LAN address, the default gateway of its
//     hosts, on port NATPMPPort (5351), by running miniupnpd in its
//     namespace (NeedMiniupnpd skips without it; Debian package
//     miniupnpd-nftables). miniupnpd maps nothing on a reserved address,
//     so such a router's Public address must lie outside the private,
//     shared and documentation prefixes (203.0.113.0/24 included; the lab
//     is closed, so any routable prefix will do). portmap_linux.go says
//     how its rules join the router's.
//   - Namespace.StartCoturn: coturn's turnserver with a static user, ready
//     once it answers STUN (NeedCoturn skips without it; Debian package
//     coturn).
//
// Everything needs root, the ip command (iproute2) and /dev/net/tun; Root
// skips the test with the reason when one is missing. Routers also need nft
// (Debian package nftables) and skip the test without it; conntrack
// entries are flushed over netlink, so the conntrack tool is not needed. The lab shells out to
// ip(8) on purpose: it is test infrastructure, and the commands in a failing
// test's log can be pasted into a shell to reproduce the setup by hand.
package natlab
