package dns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// ServeUDP answers queries arriving on pc until Close, then returns nil;
// it returns another error if reading fails for another reason, and
// ErrClosed if the server is already closed. Queries are handled
// concurrently (up to 1024 at a time per socket). Close closes pc.
func (s *Server) ServeUDP(pc net.PacketConn) error {
	if !s.track(pc) {
		return ErrClosed
	}
	defer s.untrack(pc)
	s.setAddr(pc.LocalAddr())
	udp, _ := pc.(*net.UDPConn)
	sem := make(chan struct{}, maxInFlight)
	buf := make([]byte, 65535)
	for {
		var (
			n    int
			from netip.AddrPort
			fa   net.Addr
			err  error
		)
		if udp != nil {
			n, from, err = udp.ReadFromUDPAddrPort(buf)
		} else {
			n, fa, err = pc.ReadFrom(buf)
			from = addrPortOf(fa)
		}
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dns: serve udp %v: %w", pc.LocalAddr(), err)
		}
		query := append([]byte(nil), buf[:n]...)
		select {
		case sem <- struct{}{}:
		case <-s.ctx.Done():
			return nil
		}
		if !s.track(nil) {
			return nil
		}
		go func() {
			defer s.untrack(nil)
			defer func() { <-sem }()
			reply := s.HandleQuery(s.ctx, from.Addr(), query, false)
			if reply == nil {
				return
			}
			var err error
			if udp != nil {
				_, err = udp.WriteToUDPAddrPort(reply, from)
			} else {
				_, err = pc.WriteTo(reply, fa)
			}
			if err != nil && !s.isClosed() {
				s.log.Debug("udp reply not sent", "to", from, "err", err)
			}
		}()
	}
}

// ServeTCP answers queries on connections accepted from ln until Close,
// then returns nil; it returns another error if accepting fails for a
// reason other than a temporary one, and ErrClosed if the server is already
// closed. Each connection may carry many queries, answered in order; it is
// closed after 10 s without one. Close closes ln and every connection.
func (s *Server) ServeTCP(ln net.Listener) error {
	if !s.track(ln) {
		return ErrClosed
	}
	defer s.untrack(ln)
	s.setAddr(ln.Addr())
	sem := make(chan struct{}, maxTCPConns)
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// E.g. out of file descriptors: wait and try again, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("tcp accept failed; retrying", "err", err, "in", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-s.ctx.Done():
					return nil
				}
			}
			return fmt.Errorf("dns: serve tcp %v: %w", ln.Addr(), err)
		}
		backoff = 0
		select {
		case sem <- struct{}{}:
		default:
			s.log.Debug("too many tcp connections; closing new one", "from", c.RemoteAddr())
			c.Close()
			continue
		}
		if !s.track(c) {
			c.Close()
			return nil
		}
		go func() {
			defer s.untrack(c)
			defer func() { <-sem }()
			defer c.Close()
			s.serveConn(c)
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// serveConn answers length-prefixed queries on one TCP connection.
func (s *Server) serveConn(c net.Conn) {
	src := addrPortOf(c.RemoteAddr()).Addr()
	var lenBuf [2]byte
	for {
		c.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		query := make([]byte, binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, query); err != nil {
			return
		}
		reply := s.HandleQuery(s.ctx, src, query, true)
		if reply == nil {
			// Nothing to say to a response or a runt; a well-behaved
			// client never sends one, so end the connection.
			return
		}
		out := make([]byte, 2+len(reply))
		binary.BigEndian.PutUint16(out, uint16(len(reply)))
		copy(out[2:], reply)
		c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// Start binds UDP and TCP on the same address (with port 0, the same
// kernel-chosen port for both) and serves them in the background until
// Close. Addr reports the bound address.
func (s *Server) Start(ap netip.AddrPort) error {
	if s.isClosed() {
		return ErrClosed
	}
	pc, ln, err := listenBoth(ap)
	if err != nil {
		return fmt.Errorf("dns: listen on %v: %w", ap, err)
	}
	s.setAddr(pc.LocalAddr())
	for _, serve := range []func() error{
		func() error { return s.ServeUDP(pc) },
		func() error { return s.ServeTCP(ln) },
	} {
		if !s.track(nil) {
			pc.Close()
			ln.Close()
			return ErrClosed
		}
		go func() {
			defer s.untrack(nil)
			if err := serve(); err != nil {
				if errors.Is(err, ErrClosed) {
					// Close won the race against Start; the sockets were never tracked.
					pc.Close()
					ln.Close()
					return
				}
				s.log.Error("dns server stopped", "err", err)
				select {
				case s.serveErrors <- err:
				default:
				}
			}
		}()
	}
	return nil
}

// ListenAndServe is Start followed by waiting: it returns nil after Close,
// or the error of a serve loop that failed (the server is then closed).
func (s *Server) ListenAndServe(ap netip.AddrPort) error {
	if err := s.Start(ap); err != nil {
		return err
	}
	select {
	case <-s.ctx.Done():
		return nil
	case err := <-s.serveErrors:
		s.Close()
		return err
	}
}

// listenBoth binds UDP and TCP on one port.
func listenBoth(ap netip.AddrPort) (*net.UDPConn, *net.TCPListener, error) {
	var lastErr error
	for range 10 {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr(), uint16(pc.LocalAddr().(*net.UDPAddr).Port))))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
		if ap.Port() != 0 {
			break // the caller's port is taken for TCP; nothing to retry
		}
	}
	return nil, nil, lastErr
}
