package netstack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// DialFunc dials address ("host:port") on network ("tcp"). It is the node's
// resolver plus dialer: host may be a bare overlay name ("api"), a name in
// the overlay domain ("api.weft.internal") or an IP address.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// handshakeTimeout bounds a proxy client's negotiation and request.
const handshakeTimeout = 30 * time.Second

// connServer owns the listeners, connections and goroutines of one proxy.
// Its zero value is ready to use.
type connServer struct {
	mu sync.Mutex
	// closed, listeners, conns and ctx/cancel are guarded by mu.
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	ctx       context.Context
	cancel    context.CancelFunc

	// wg counts Serve loops and connection goroutines. Add is only called
	// with mu held and closed false, so it never races with Wait.
	wg sync.WaitGroup
}

func (s *connServer) initLocked() {
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.listeners = make(map[net.Listener]struct{})
		s.conns = make(map[net.Conn]struct{})
	}
}

// serve accepts from l until it fails or the server closes, running handle
// in a new owned goroutine per connection.
func (s *connServer) serve(l net.Listener, log *slog.Logger, handle func(ctx context.Context, c net.Conn)) error {
	s.mu.Lock()
	s.initLocked()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrProxyClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	ctx := s.ctx
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrProxyClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-ctx.Done():
					return ErrProxyClosed
				}
			}
			return err
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			return ErrProxyClosed
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			handle(ctx, c)
		}()
	}
}

func (s *connServer) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track registers c (and one goroutine) with the server; false means the
// server is closed and the caller must close c itself.
func (s *connServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// trackConn registers an extra connection (such as a dialed upstream) that
// Close must close, without a goroutine. False means the server is closed.
func (s *connServer) trackConn(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// untrack closes c and forgets it.
func (s *connServer) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// close stops every Serve loop, closes every tracked connection and waits
// for all goroutines.
func (s *connServer) close() error {
	s.mu.Lock()
	s.initLocked()
	if !s.closed {
		s.closed = true
		s.cancel()
		for l := range s.listeners {
			l.Close()
		}
		for c := range s.conns {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// closeWriter is implemented by *net.TCPConn, gonet's TCPConn and others.
type closeWriter interface{ CloseWrite() error }

var relayBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// relay copies both ways between a and b, propagating a half-close (EOF on
// one side becomes CloseWrite on the other) and returns when both
// directions are done. It closes neither connection. The second direction
// runs in a goroutine that relay waits for.
func relay(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(a, b)
	}()
	copyHalf(b, a)
	<-done
}

// copyHalf copies src to dst, then half-closes dst (or closes it if it
// cannot half-close, which also ends the other direction).
func copyHalf(dst, src net.Conn) {
	bp := relayBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(dst, onlyReader{src}, *bp)
	relayBufs.Put(bp)
	if cw, ok := dst.(closeWriter); ok && err == nil {
		cw.CloseWrite()
		return
	}
	// Error, or no half-close: tear both down so the peer goroutine ends.
	dst.Close()
	src.Close()
}

// onlyReader hides WriterTo so io.CopyBuffer uses the pooled buffer.
type onlyReader struct{ io.Reader }
