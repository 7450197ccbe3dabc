package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/trust"
)

// The trust part of the local API (see api.go for the rest). Anchor-only
// operations answer 403 with "run this on an anchor" on other nodes.
//
//	POST /v1/invite/cosign     {"token"} → weft.StatementResult
//	GET  /v1/trust             weft.TrustStatus
//	GET  /v1/trust/pending     [pendingJoin]
//	POST /v1/trust/approve     {"host"} → {"host","state","threshold"}
//	POST /v1/trust/reject      {"host","why"} → {"host","state","threshold"}
//	GET  /v1/trust/genesis     {"token"}
//	POST /v1/trust/cosign      {"token"} → weft.StatementResult
//	POST /v1/trust/publish     {"token"} → {"fresh"}
//	POST /v1/trust/change      {"add","remove","threshold"} → weft.StatementResult
//	POST /v1/trust/policy      {"rules": ["from=.. to=.. proto=.. ports=.."]} → weft.StatementResult
//	POST /v1/revoke            {"host","reason"} → weft.StatementResult
//	POST /v1/rotate            {"node_id","wg_public_key"}

func (s *apiServer) routeTrust(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/invite/cosign", s.cosignInvite)
	mux.HandleFunc("GET /v1/trust", s.trustStatus)
	mux.HandleFunc("GET /v1/trust/pending", s.pending)
	mux.HandleFunc("POST /v1/trust/approve", s.approve)
	mux.HandleFunc("POST /v1/trust/reject", s.reject)
	mux.HandleFunc("GET /v1/trust/genesis", s.genesis)
	mux.HandleFunc("POST /v1/trust/cosign", s.cosign)
	mux.HandleFunc("POST /v1/trust/publish", s.publish)
	mux.HandleFunc("POST /v1/trust/change", s.change)
	mux.HandleFunc("POST /v1/trust/policy", s.policy)
	mux.HandleFunc("POST /v1/revoke", s.revoke)
	mux.HandleFunc("POST /v1/rotate", s.rotate)
}

// errRunOnAnchor replaces weft.ErrNotAnchor in answers to anchor-only
// requests, whose message names `weft invite`.
var errRunOnAnchor = errors.New("this node is not an anchor of its network: run this on an anchor (`weft trust status` lists them)")

// writeTrustErr answers with err: 403 for a node that is not an anchor,
// 400 otherwise.
func writeTrustErr(w http.ResponseWriter, err error) {
	if errors.Is(err, weft.ErrNotAnchor) {
		writeErr(w, http.StatusForbidden, errRunOnAnchor)
		return
	}
	writeErr(w, http.StatusBadRequest, err)
}

// readJSON decodes a small JSON request body into v, answering 400 if it
// cannot.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, errors.New("bad request: "+err.Error()))
		return false
	}
	return true
}

// tokenRequest carries one token.
type tokenRequest struct {
	Token string `json:"token"`
}

func (s *apiServer) cosignInvite(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !strings.HasPrefix(strings.TrimSpace(req.Token), trust.InvitePrefix) {
		writeErr(w, http.StatusBadRequest, errors.New("not an invite: an invite token starts with \""+trust.InvitePrefix+"\" (to cosign a revocation, anchor-set change or policy, use `weft trust cosign`)"))
		return
	}
	res, err := s.node.Cosign(req.Token)
	s.answerStatement(w, res, err)
}

func (s *apiServer) cosign(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	res, err := s.node.Cosign(req.Token)
	s.answerStatement(w, res, err)
}

// answerStatement writes a statement result or its error.
func (s *apiServer) answerStatement(w http.ResponseWriter, res weft.StatementResult, err error) {
	if err != nil {
		writeTrustErr(w, err)
		return
	}
	writeJSON(w, res)
}

func (s *apiServer) trustStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.node.Trust())
}

// pendingJoin is the JSON form of a trust.PendingJoin.
type pendingJoin struct {
	NodeID   addr.NodeID `json:"node_id"`
	Name     string      `json:"name"`
	Tags     []string    `json:"tags,omitempty"`
	IPv4     string      `json:"ipv4"`
	WGKey    string      `json:"wg_key"`
	Received time.Time   `json:"received"`
	State    string      `json:"state"`
	Why      string      `json:"why,omitempty"`
}

func (s *apiServer) pending(w http.ResponseWriter, r *http.Request) {
	list, err := s.node.Pending()
	if err != nil {
		writeTrustErr(w, err)
		return
	}
	out := make([]pendingJoin, 0, len(list))
	for _, p := range list {
		out = append(out, pendingJoin{NodeID: p.NodeID, Name: p.Name, Tags: p.Tags, IPv4: p.IPv4.String(),
			WGKey: base64.StdEncoding.EncodeToString(p.WGKey[:]), Received: p.Received.UTC(), State: string(p.State), Why: p.Why})
	}
	writeJSON(w, out)
}

// decisionRequest approves or rejects a pending join.
type decisionRequest struct {
	Host string `json:"host"`
	Why  string `json:"why,omitempty"`
}

// decisionResult is the pending request's new state on this anchor, and
// how many anchors must approve.
type decisionResult struct {
	Host      string `json:"host"`
	State     string `json:"state"`
	Threshold int    `json:"threshold"`
}

func (s *apiServer) approve(w http.ResponseWriter, r *http.Request) {
	var req decisionRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := s.node.Approve(req.Host); err != nil {
		writeTrustErr(w, err)
		return
	}
	writeJSON(w, decisionResult{Host: req.Host, State: string(trust.PendingApproved), Threshold: s.node.Trust().Threshold})
}

func (s *apiServer) reject(w http.ResponseWriter, r *http.Request) {
	var req decisionRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := s.node.Reject(req.Host, req.Why); err != nil {
		writeTrustErr(w, err)
		return
	}
	writeJSON(w, decisionResult{Host: req.Host, State: string(trust.PendingRejected), Threshold: s.node.Trust().Threshold})
}

func (s *apiServer) genesis(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, tokenRequest{Token: s.node.GenesisToken()})
}

// publishResult says whether a published statement was new to the node.
type publishResult struct {
	Fresh bool `json:"fresh"`
}

func (s *apiServer) publish(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	fresh, err := s.node.Publish(req.Token)
	if err != nil {
		writeTrustErr(w, err)
		return
	}
	writeJSON(w, publishResult{Fresh: fresh})
}

// changeRequest proposes an anchor-set change.
type changeRequest struct {
	Add       []string `json:"add,omitempty"`    // anchor descriptor tokens
	Remove    []string `json:"remove,omitempty"` // anchor names or node IDs
	Threshold int      `json:"threshold,omitempty"`
}

func (s *apiServer) change(w http.ResponseWriter, r *http.Request) {
	var req changeRequest
	if !readJSON(w, r, &req) {
		return
	}
	res, err := s.node.ProposeAnchorChange(req.Add, req.Remove, req.Threshold)
	s.answerStatement(w, res, err)
}

// policyRequest proposes a policy; each rule is in the --rule syntax
// (parseRule).
type policyRequest struct {
	Rules []string `json:"rules"`
}

func (s *apiServer) policy(w http.ResponseWriter, r *http.Request) {
	var req policyRequest
	if !readJSON(w, r, &req) {
		return
	}
	rules, err := parseRules(req.Rules)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	res, err := s.node.ProposePolicy(rules)
	s.answerStatement(w, res, err)
}

// revokeRequest names the node to revoke.
type revokeRequest struct {
	Host   string `json:"host"`
	Reason string `json:"reason,omitempty"`
}

func (s *apiServer) revoke(w http.ResponseWriter, r *http.Request) {
	var req revokeRequest
	if !readJSON(w, r, &req) {
		return
	}
	res, err := s.node.Revoke(r.Context(), req.Host, req.Reason)
	s.answerStatement(w, res, err)
}

// rotateResult is the node's new WireGuard key.
type rotateResult struct {
	NodeID      addr.NodeID `json:"node_id"`
	WGPublicKey string      `json:"wg_public_key"`
}

func (s *apiServer) rotate(w http.ResponseWriter, r *http.Request) {
	if err := s.node.RotateKey(r.Context()); err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	k := s.node.WGPublicKey()
	writeJSON(w, rotateResult{NodeID: s.node.NodeID(), WGPublicKey: base64.StdEncoding.EncodeToString(k[:])})
}
