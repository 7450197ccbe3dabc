package netstack

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"
)

// Expose forwards every connection accepted on an overlay listener to a
// local TCP service, so an existing server joins the overlay unchanged.
// Half-closes are propagated in both directions.
type Expose struct {
	// Listener is the overlay listener (for example from Stack.ListenTCP).
	// Required. Expose closes it when Close is called.
	Listener net.Listener

	// Target is the local service, "host:port" (for example
	// "127.0.0.1:8080"). Required.
	Target string

	// Dial connects to Target. Nil means a net.Dialer.
	Dial DialFunc

	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger

	// DialTimeout bounds each dial to Target. Zero means 10 seconds.
	DialTimeout time.Duration

	srv connServer
}

// Serve forwards connections until the listener fails or Close is called,
// and then returns ErrProxyClosed (after Close) or the accept error.
func (e *Expose) Serve() error {
	if e.Listener == nil || e.Target == "" {
		return errors.New("expose serve: Expose.Listener and Expose.Target must be set")
	}
	dial := e.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	timeout := e.DialTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	log := logger(e.Logger, "expose").With("target", e.Target)
	return e.srv.serve(e.Listener, log, func(ctx context.Context, c net.Conn) {
		dctx, cancel := context.WithTimeout(ctx, timeout)
		local, err := dial(dctx, "tcp", e.Target)
		cancel()
		if err != nil {
			log.Warn("cannot reach exposed service; is it running?", "peer", c.RemoteAddr().String(), "err", err)
			return
		}
		if !e.srv.trackConn(local) {
			local.Close()
			return
		}
		defer e.srv.untrack(local)
		log.Debug("forwarding", "peer", c.RemoteAddr().String())
		relay(c, local)
	})
}

// Close closes the listener and all forwarded connections and returns once
// all of Expose's goroutines have exited. It is idempotent and returns nil.
func (e *Expose) Close() error {
	if e.Listener != nil {
		e.Listener.Close()
	}
	return e.srv.close()
}
