package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
)

func init() {
	register(&command{name: "nc", usage: "HOST PORT", summary: "connect stdin/stdout to HOST:PORT in the overlay (ssh -o ProxyCommand='weft nc %h %p')", run: runNC})
}

func runNC(ctx context.Context, e *env, args []string) error {
	var state string
	var udp bool
	fs := newFlagSet(e, commands["nc"], &state)
	fs.BoolVar(&udp, "u", false, "UDP instead of TCP (each read of stdin is one datagram)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		fmt.Fprintf(e.stderr, "weft nc: want HOST PORT, got %d arguments\n", len(pos))
		fs.Usage()
		return errUsage
	}
	if _, err := strconv.ParseUint(pos[1], 10, 16); err != nil {
		fmt.Fprintf(e.stderr, "weft nc: PORT %q is not a port number\n", pos[1])
		fs.Usage()
		return errUsage
	}
	network := "tcp"
	if udp {
		network = "udp"
	}
	conn, br, err := newAPIClient(stateDir(state)).dial(ctx, network, net.JoinHostPort(pos[0], pos[1]))
	if err != nil {
		return err
	}
	defer conn.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(e.stdout, br)
		close(done)
	}()
	go func() {
		io.Copy(conn, e.stdin)
		if cw, ok := conn.(closeWriter); ok {
			cw.CloseWrite()
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}
