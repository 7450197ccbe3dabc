package netstack

import "syscall"

var syscallECONNREFUSED = syscall.ECONNREFUSED
