package main

import (
	"context"
	"fmt"

	"github.com/weft-net/weft"
)

func init() {
	register(&command{name: "revoke", usage: "NAME|NODEID|IP", summary: "on an anchor: revoke a node (other anchors cosign until t have signed; then it spreads)", run: runRevoke})
}

func runRevoke(ctx context.Context, e *env, args []string) error {
	var state, reason string
	var asJSON bool
	fs := newFlagSet(e, commands["revoke"], &state)
	fs.StringVar(&reason, "reason", "", "why, recorded in the revocation for every node to see")
	fs.BoolVar(&asJSON, "json", false, "print JSON: token, endorsements, threshold, published")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintf(e.stderr, "weft revoke: want exactly one node (name, node ID or overlay address), got %d arguments\n", len(pos))
		fs.Usage()
		return errUsage
	}
	var res weft.StatementResult
	if err := newAPIClient(stateDir(state)).do(ctx, "POST", "/v1/revoke", revokeRequest{Host: pos[0], Reason: reason}, &res); err != nil {
		return err
	}
	return reportStatement(e, res, asJSON)
}
