package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func init() {
	register(&command{name: "version", summary: "print the weft version", run: runVersion})
}

func runVersion(ctx context.Context, e *env, args []string) error {
	var state string
	var asJSON bool
	fs := newFlagSet(e, commands["version"], &state)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	v := struct {
		Version string `json:"version"`
		Go      string `json:"go"`
		Commit  string `json:"commit,omitempty"`
	}{Version: version, Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(v)
	}
	fmt.Fprintf(e.stdout, "weft %s (%s", v.Version, v.Go)
	if v.Commit != "" {
		fmt.Fprintf(e.stdout, ", commit %.12s", v.Commit)
	}
	fmt.Fprintln(e.stdout, ")")
	return nil
}
