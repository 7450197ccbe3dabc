package nat

// UDP GSO (UDP_SEGMENT) and GRO (UDP_GRO) for the shared socket. The
// cmsg encoding and the probe follow wireguard-go's conn/gso_linux.go,
// conn/features_linux.go and conn/errors_linux.go (MIT, Copyright (C)
// 2017-2025 WireGuard LLC).

import (
	"errors"
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sizeofGSOData is the size of the UDP_SEGMENT and UDP_GRO cmsg payload, a
// native-endian uint16 segment size.
const sizeofGSOData = 2

// gsoControlSize is the control buffer space one UDP_SEGMENT or UDP_GRO
// cmsg takes.
var gsoControlSize = unix.CmsgSpace(sizeofGSOData)

// enableOffload turns on UDP_GRO for udp and reports which offloads the
// kernel supports: tx (UDP_SEGMENT on send) and rx (UDP_GRO on receive).
// Kernels before 5.12 cannot report UDP_GRO back; there GRO is turned off
// again rather than risk coalesced datagrams we would not know to split.
func enableOffload(udp *net.UDPConn) (tx, rx bool, err error) {
	rc, err := udp.SyscallConn()
	if err != nil {
		return false, false, err
	}
	cerr := rc.Control(func(fd uintptr) {
		_, e := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		tx = e == nil
		if unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) != nil {
			return
		}
		v, e := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO)
		if rx = e == nil && v == 1; !rx {
			err = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0)
		}
	})
	if cerr != nil {
		return false, false, cerr
	}
	return tx, rx, err
}

// getGSOSize returns the segment size of a UDP_GRO cmsg in control, or 0
// if there is none (the datagram was not coalesced).
func getGSOSize(control []byte) (int, error) {
	for rem := control; len(rem) > unix.SizeofCmsghdr; {
		hdr, data, next, err := unix.ParseOneSocketControlMessage(rem)
		if err != nil {
			return 0, fmt.Errorf("parsing socket control message: %w", err)
		}
		if hdr.Level == unix.SOL_UDP && hdr.Type == unix.UDP_GRO && len(data) >= sizeofGSOData {
			var gso uint16
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&gso)), sizeofGSOData), data[:sizeofGSOData])
			return int(gso), nil
		}
		rem = next
	}
	return 0, nil
}

// setGSOSize appends a UDP_SEGMENT cmsg for gsoSize to control, within
// its capacity (it does nothing if there is no room).
func setGSOSize(control *[]byte, gsoSize uint16) {
	setUDPCmsg(control, unix.UDP_SEGMENT, gsoSize)
}

// setUDPCmsg appends a SOL_UDP cmsg of type typ carrying a uint16.
func setUDPCmsg(control *[]byte, typ int32, v uint16) {
	n := len(*control)
	space := unix.CmsgSpace(sizeofGSOData)
	if cap(*control)-n < space {
		return
	}
	*control = (*control)[:n+space]
	c := (*control)[n:]
	clear(c)
	hdr := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	hdr.Level = unix.SOL_UDP
	hdr.Type = typ
	hdr.SetLen(unix.CmsgLen(sizeofGSOData))
	copy(c[unix.CmsgLen(0):], unsafe.Slice((*byte)(unsafe.Pointer(&v)), sizeofGSOData))
}

// shouldDisableGSO reports whether a send error means the kernel or the
// route's device refuses UDP_SEGMENT: udp_send_skb returns EIO when the
// device has no TX checksum offload, which UDP GSO requires (udp(7)).
func shouldDisableGSO(err error) bool {
	return errors.Is(err, unix.EIO)
}
