package udpbatch

import (
	"errors"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gsoControlSize is the control buffer space a UDP_SEGMENT cmsg takes.
var gsoControlSize = unix.CmsgSpace(2)

// canGSO reports whether the kernel takes UDP_SEGMENT on udp's sends.
func canGSO(udp *net.UDPConn) bool {
	rc, err := udp.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		_, e := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		ok = e == nil
	})
	return ok
}

// setGSO sets oob to one UDP_SEGMENT cmsg for segments of size bytes.
// oob must have room for gsoControlSize bytes.
func setGSO(oob *[]byte, size uint16) {
	b := (*oob)[:gsoControlSize]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = size
	*oob = b
}

// gsoRefused reports whether a send failed because the route's device
// cannot segment (EIO), as wireguard-go's conn/errors_linux.go checks.
func gsoRefused(err error) bool {
	var serr *net.OpError
	if errors.As(err, &serr) {
		err = serr.Err
	}
	return errors.Is(err, unix.EIO)
}

// groControlSize is the control buffer space a UDP_GRO cmsg takes.
var groControlSize = unix.CmsgSpace(4)

// enableGRO asks the kernel to coalesce udp's received datagrams (UDP_GRO)
// and reports whether it will.
func enableGRO(udp *net.UDPConn) bool {
	rc, err := udp.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	return ok
}

// groSize returns the segment size a UDP_GRO cmsg in oob gives, or 0.
func groSize(oob []byte) int {
	for len(oob) >= unix.CmsgSpace(0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}
