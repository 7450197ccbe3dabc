package main

import (
	"context"
	"fmt"
)

func init() {
	register(&command{name: "rotate", summary: "give the running node a new WireGuard key (peers follow; open connections survive) and print its public key", run: runRotate})
}

func runRotate(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, commands["rotate"], &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var res rotateResult
	if err := newAPIClient(stateDir(state)).do(ctx, "POST", "/v1/rotate", nil, &res); err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, res)
	}
	fmt.Fprintln(e.stdout, res.WGPublicKey)
	fmt.Fprintln(e.stderr, "new WireGuard key in use; peers were sent a record with it (the node ID, addresses and certificate stay the same)")
	return nil
}
