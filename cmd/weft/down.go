package main

import (
	"context"
	"fmt"
	"net"
	"time"
)

func init() {
	register(&command{name: "down", summary: "stop the running node", run: runDown})
}

func runDown(ctx context.Context, e *env, args []string) error {
	var state string
	fs := newFlagSet(e, commands["down"], &state)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	state = stateDir(state)
	if err := newAPIClient(state).do(ctx, "POST", "/v1/down", nil, nil); err != nil {
		return err
	}
	// Wait until the socket stops answering, so a following `weft up` works.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("unix", socketPath(state), 200*time.Millisecond)
		if err != nil {
			fmt.Fprintln(e.stdout, "weft stopped")
			return nil
		}
		c.Close()
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintln(e.stderr, "weft: the daemon is still shutting down")
	return nil
}
