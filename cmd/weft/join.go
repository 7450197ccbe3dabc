package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/weft-net/weft"
)

func init() {
	register(&command{name: "join", usage: "TOKEN | --genesis TOKEN", summary: "join a network with an invite token endorsed by its anchors, or wait for their approval (--genesis)", run: runJoin})
}

// defaultApprovalWait is how long `weft join --genesis` waits for the
// anchors' operators unless --wait says otherwise.
const defaultApprovalWait = 10 * time.Minute

func runJoin(ctx context.Context, e *env, args []string) error {
	var opts weft.JoinOptions
	var asJSON bool
	var anchors listFlag
	fs := newFlagSet(e, commands["join"], &opts.StateDir)
	fs.StringVar(&opts.Name, "name", "", "this node's `NAME` (default: the invite's name, else the host name)")
	fs.StringVar(&opts.Genesis, "genesis", "", "join without invite: send the request to the anchors of this genesis `TOKEN` (`weft trust genesis`) and wait for t of them to approve")
	fs.Var(&anchors, "anchor", "also ask the anchor at `ADDR:PORT` (repeatable; for anchors the genesis and invite do not locate)")
	fs.DurationVar(&opts.Wait, "wait", 0, "how long to keep asking while approvals are pending (default 0 with an invite, 10m with --genesis)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 1 && opts.Genesis != "":
		fmt.Fprintln(e.stderr, "weft join: give an invite TOKEN or --genesis TOKEN, not both (an invite already names its network)")
		fs.Usage()
		return errUsage
	case len(pos) == 0 && opts.Genesis != "":
		opts.Genesis = strings.TrimSpace(opts.Genesis)
	case len(pos) != 1:
		fmt.Fprintf(e.stderr, "weft join: want exactly one TOKEN (the line `weft invite` printed), or --genesis TOKEN to wait for approval; got %d arguments\n", len(pos))
		fs.Usage()
		return errUsage
	default:
		opts.Token = strings.TrimSpace(pos[0])
	}
	if opts.Wait < 0 {
		return errors.New("--wait must not be negative")
	}
	if opts.Genesis != "" && !flagSet(fs, "wait") {
		opts.Wait = defaultApprovalWait
	}
	if opts.Anchors, err = parseAddrPorts("--anchor", anchors); err != nil {
		return err
	}
	opts.StateDir = stateDir(opts.StateDir)
	opts.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts.Progress = func(s string) { fmt.Fprintf(e.stderr, "weft join: %s\n", s) }
	m, err := weft.Join(ctx, opts)
	if err != nil {
		return err
	}
	return printMembership(e, m, asJSON, "joined network")
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}
