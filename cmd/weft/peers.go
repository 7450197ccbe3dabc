package main

import (
	"context"
	"fmt"
)

func init() {
	register(&command{name: "peers", summary: "list peers: name, node ID, addresses, endpoint, path, handshake, traffic", run: runPeers})
}

func runPeers(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, commands["peers"], &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	st, err := fetchStatus(ctx, state)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, st.Peers)
	}
	printPeers(e.stdout, st.Peers)
	for _, p := range st.Peers {
		fmt.Fprintf(e.stdout, "%s: %s\n", p.Name, p.Reason)
	}
	return nil
}
