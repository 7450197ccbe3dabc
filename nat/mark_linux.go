package nat

import (
	"net"

	"golang.org/x/sys/unix"
)

func setMark(udp *net.UDPConn, mark uint32) error {
	rc, err := udp.SyscallConn()
	if err != nil {
		return err
	}
	var operr error
	if err := rc.Control(func(fd uintptr) {
		operr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
	}); err != nil {
		return err
	}
	return operr
}
