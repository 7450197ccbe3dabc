package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"
)

// pprofEnv names the environment variable that makes `weft up` serve the
// Go profiler (net/http/pprof) on an address, for performance work:
// WEFT_PPROF=127.0.0.1:6060. Unset or empty means no profiler. It is an
// environment variable, not a flag, so that benchmarks can profile the
// daemons they start without changing their command lines.
const pprofEnv = "WEFT_PPROF"

// servePprof serves /debug/pprof/ on $WEFT_PPROF, if set, and returns the
// server (nil if not set) for the caller to close.
func servePprof(e *env) (*http.Server, error) {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pprofEnv, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(e.stderr, "weft: profiler stopped: %v\n", err)
		}
	}()
	fmt.Fprintf(e.stderr, "weft: profiler on http://%s/debug/pprof/\n", ln.Addr())
	return srv, nil
}
