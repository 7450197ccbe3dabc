//go:build !linux

package udpbatch

import "net"

const gsoControlSize = 0

func canGSO(*net.UDPConn) bool { return false }
func setGSO(*[]byte, uint16)   {}
func gsoRefused(error) bool    { return false }

const groControlSize = 0

func enableGRO(*net.UDPConn) bool { return false }
func groSize([]byte) int          { return 0 }
