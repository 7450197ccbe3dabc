// Package platform will bring up a kernel TUN interface per OS (Linux first:
// netlink addresses, routes, MTU, offloads) and configure the OS resolver for
// the overlay domain. It provides a tun.Device to package tunnel, exactly as
// package netstack does in userspace mode. It is empty until the kernel TUN
// issue fills it.
package platform
