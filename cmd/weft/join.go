package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/weft-net/weft"
)

func init() {
	register(&command{name: "join", usage: "TOKEN", summary: "join a network with an invite token from one of its anchors", run: runJoin})
}

func runJoin(ctx context.Context, e *env, args []string) error {
	var opts weft.JoinOptions
	var asJSON bool
	fs := newFlagSet(e, commands["join"], &opts.StateDir)
	fs.StringVar(&opts.Name, "name", "", "this node's `NAME` (default: the invite's name, else the host name)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintf(e.stderr, "weft join: want exactly one TOKEN (the line `weft invite` printed), got %d arguments\n", len(pos))
		fs.Usage()
		return errUsage
	}
	opts.Token = strings.TrimSpace(pos[0])
	opts.StateDir = stateDir(opts.StateDir)
	opts.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, err := weft.Join(ctx, opts)
	if err != nil {
		return err
	}
	return printMembership(e, m, asJSON, "joined network")
}
