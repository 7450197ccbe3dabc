package weft

import "errors"

// ErrNotJoined is returned by Start when the state directory holds no
// network membership.
var ErrNotJoined = errors.New("no network membership in the state directory: run `weft init` to create a network or `weft join TOKEN` to join one")

// ErrClosed is returned by methods of a Node after Close.
var ErrClosed = errors.New("weft: node closed")

// ErrNotFound is returned by Resolve when no valid record names the host.
var ErrNotFound = errors.New("no such node in the overlay")

// ErrNotAnchor is returned when an anchor-only operation runs on a member.
var ErrNotAnchor = errors.New("this node is not an anchor of its network: run `weft invite` on an anchor")
