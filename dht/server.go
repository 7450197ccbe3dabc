package dht

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// ServerOptions configures a Server.
type ServerOptions struct {
	// Transport receives the requests. Required.
	Transport Transport

	// Store holds the records served. Required; the Server does not own
	// it, so the caller closes it.
	Store *Store

	// Closest returns up to n contacts closest to target, for FIND_NODE
	// replies and FIND_VALUE replies without a value. Nil means the server
	// has no routing table and replies carry no contacts (this issue's
	// bootstrap-only DHT). Contacts with unusable addresses are dropped.
	Closest func(target Key, n int) []Contact

	// Logger receives malformed requests at Debug. Nil discards.
	Logger *slog.Logger
}

// Server answers FIND_VALUE, STORE and FIND_NODE requests from its Store,
// and PING.
// It has no goroutines of its own: handlers run on the Transport's.
type Server struct {
	store   *Store
	closest func(Key, int) []Contact
	log     *slog.Logger
}

// NewServer returns a Server and registers its handlers on opts.Transport
// for MsgFindValue, MsgStore, MsgFindNode and MsgPing.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Transport == nil {
		return nil, errors.New("dht new server: ServerOptions.Transport must be non-nil")
	}
	if opts.Store == nil {
		return nil, errors.New("dht new server: ServerOptions.Store must be non-nil")
	}
	s := &Server{store: opts.Store, closest: opts.Closest, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "dht-server")
	opts.Transport.Handle(MsgFindValue, s.handleFindValue)
	opts.Transport.Handle(MsgStore, s.handleStore)
	opts.Transport.Handle(MsgFindNode, s.handleFindNode)
	opts.Transport.Handle(MsgPing, s.handlePing)
	return s, nil
}

func (s *Server) handlePing(ctx context.Context, from Peer, body []byte) ([]byte, error) {
	var req PingRequest
	if err := req.UnmarshalBinary(body); err != nil {
		s.log.Debug("bad request", "peer", from, "err", err)
		return nil, err
	}
	return PingResponse{Nonce: req.Nonce}.MarshalBinary()
}

func (s *Server) handleFindValue(ctx context.Context, from Peer, body []byte) ([]byte, error) {
	var req FindValueRequest
	if err := req.UnmarshalBinary(body); err != nil {
		s.log.Debug("bad request", "peer", from, "err", err)
		return nil, err
	}
	var resp FindValueResponse
	if rec, ok := s.store.Get(req.Key); ok {
		resp.Found, resp.Value = true, rec.Value
	} else {
		resp.Contacts = s.contacts(req.Key)
	}
	return resp.MarshalBinary()
}

func (s *Server) handleStore(ctx context.Context, from Peer, body []byte) ([]byte, error) {
	var req StoreRequest
	if err := req.UnmarshalBinary(body); err != nil {
		s.log.Debug("bad request", "peer", from, "err", err)
		return nil, err
	}
	var resp StoreResponse
	if err := s.store.Put(from, req.Key, req.Value); err != nil {
		if errors.Is(err, ErrClosed) {
			return nil, err
		}
		resp.Status = statusOf(err)
		if se, ok := errors.AsType[*StoreError](err); ok {
			resp.Detail = se.Detail
		}
	}
	resp.StoredSeq, _ = s.store.Seq(req.Key)
	return resp.MarshalBinary()
}

func (s *Server) handleFindNode(ctx context.Context, from Peer, body []byte) ([]byte, error) {
	var req FindNodeRequest
	if err := req.UnmarshalBinary(body); err != nil {
		s.log.Debug("bad request", "peer", from, "err", err)
		return nil, err
	}
	return FindNodeResponse{Contacts: s.contacts(req.Target)}.MarshalBinary()
}

// contacts asks Closest and keeps what can be encoded.
func (s *Server) contacts(target Key) []Contact {
	if s.closest == nil {
		return nil
	}
	var out []Contact
	for _, c := range s.closest(target, MaxContacts) {
		if len(out) == MaxContacts {
			break
		}
		if err := checkContactAddr(c.Peer.Addr); err != nil {
			s.log.Debug("dropping unusable contact", "id", c.ID.Short(), "err", fmt.Sprint(err))
			continue
		}
		out = append(out, c)
	}
	return out
}
