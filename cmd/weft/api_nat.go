package main

import (
	"context"
	"net/http"
	"time"
)

// The NAT traversal endpoints of the local API:
//
//	GET  /v1/ping?host=H          weft.PingResult (one ping over the peer's WireGuard path)
//	GET  /v1/netcheck             weft.NetcheckReport
func (s *apiServer) routeNAT(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/ping", s.ping)
	mux.HandleFunc("GET /v1/netcheck", s.netcheck)
}

func (s *apiServer) ping(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 25*time.Second)
	defer cancel()
	res, err := s.node.Ping(ctx, r.URL.Query().Get("host"))
	if err != nil {
		writeErr(w, http.StatusBadGateway, err)
		return
	}
	writeJSON(w, res)
}

func (s *apiServer) netcheck(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	rep, err := s.node.Netcheck(ctx)
	if err != nil {
		writeErr(w, http.StatusBadGateway, err)
		return
	}
	writeJSON(w, rep)
}
