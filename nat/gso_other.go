//go:build !linux

package nat

import "net"

// gsoControlSize is 0: no UDP offloads outside Linux.
const gsoControlSize = 0

func enableOffload(*net.UDPConn) (tx, rx bool, err error) { return false, false, nil }
func getGSOSize([]byte) (int, error)                      { return 0, nil }
func setGSOSize(*[]byte, uint16)                          {}
func shouldDisableGSO(error) bool                         { return false }
