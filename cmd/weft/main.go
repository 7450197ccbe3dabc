// Command weft is the CLI and daemon of the weft overlay network.
//
// Every subcommand lives in its own file with its own FlagSet; state-printing
// commands take --json. The daemon (`weft up`) serves the other commands over
// an owner-only Unix socket in the state directory.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	usage   string // argument synopsis
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what a subcommand runs with.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// errUsage means the usage was already printed; exit status 2.
var errUsage = errors.New("usage")

// errReported means the error was already printed; exit status 1.
var errReported = errors.New("reported")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Run runs the CLI with args (without the program name) and returns the exit
// status.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		args[0] = "version"
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "weft: unknown command %q; run `weft help` for the list\n", args[0])
		return 2
	}
	err := c.run(ctx, e, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		// Asked for with -h: not a failure, like `weft help`.
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errReported):
		return 1
	default:
		fmt.Fprintf(stderr, "weft %s: %v\n", c.name, err)
		return 1
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "weft: a decentralized WireGuard overlay network\n\nUsage: weft COMMAND [flags] [args]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %-8s %s\n", n, c.summary)
	}
	fmt.Fprintln(w, "\nEvery command takes --state DIR (default $WEFT_STATE or ~/.local/state/weft).\nRun `weft COMMAND -h` for a command's flags.")
}

// newFlagSet makes a subcommand's FlagSet with the common --state flag.
func newFlagSet(e *env, c *command, state *string) *flag.FlagSet {
	fs := flag.NewFlagSet("weft "+c.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(state, "state", "", "state `DIR` (default $WEFT_STATE, else ~/.local/state/weft)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: %s\n\n%s\n\nFlags:\n", strings.TrimSpace("weft "+c.name+" [flags] "+c.usage), c.summary)
		fs.PrintDefaults()
	}
	return fs
}

// parseNoArgs parses args of a command that takes flags only.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", pos[0])
		fs.Usage()
		return errUsage
	}
	return nil
}

// oneToken parses the args of a command that takes exactly one TOKEN
// argument; what says where the token comes from.
func oneToken(fs *flag.FlagSet, args []string, what string) (string, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		fmt.Fprintf(fs.Output(), "%s: want exactly one TOKEN (%s), got %d arguments\n", fs.Name(), what, len(pos))
		fs.Usage()
		return "", errUsage
	}
	return strings.TrimSpace(pos[0]), nil
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parse parses args, allowing flags after positional arguments. After "--"
// everything is positional.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, flag.ErrHelp
			}
			return nil, errUsage
		}
		rest := fs.Args()
		if endsWithTerminator(fs, args[:len(args)-len(rest)]) {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// endsWithTerminator reports whether fs.Parse stopped at a "--" among the
// flags it consumed, rather than at a "--" that was the value of a flag
// (--name --).
func endsWithTerminator(fs *flag.FlagSet, consumed []string) bool {
	for i := 0; i < len(consumed); i++ {
		a := consumed[i]
		if a == "--" {
			return true
		}
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		i++ // the next argument is this flag's value
	}
	return false
}

// listFlag is a flag that may repeat and also takes comma-separated lists.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}
