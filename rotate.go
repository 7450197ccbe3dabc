package weft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/trust"
	"github.com/weft-net/weft/tunnel"
)

// RotateKey replaces the node's WireGuard key without interrupting open
// connections for longer than one handshake:
//
//  1. a new key is made and saved (the identity file keeps only the new
//     one);
//  2. a new record carrying it, signed by the node's identity key, is sent
//     to every current peer in a connect exchange sealed with the new key —
//     each peer swaps our old key for the new one in its WireGuard config;
//  3. the device and the control socket switch to the new key, and the
//     record is republished to the bootstrap nodes.
//
// Packets in flight during step 3 are lost and TCP retransmits them; the
// next handshake uses the new key.
func (n *Node) RotateKey(ctx context.Context) error {
	if n.isClosed() {
		return ErrClosed
	}
	n.rotateMu.Lock()
	defer n.rotateMu.Unlock()
	old := n.id.WG
	if _, err := n.id.RotateWG(); err != nil {
		return fmt.Errorf("rotate key: %w", err)
	}
	// The control socket answers with the new key from now on; calls
	// sealed to the old key are still answered during the switch.
	if err := n.conn.SetPrivateKey(n.id.WG); err != nil {
		n.id.WG = old
		return fmt.Errorf("rotate key: control socket: %w", err)
	}
	if err := trust.SaveIdentity(n.cfg.StateDir, n.id); err != nil {
		n.id.WG = old
		_ = n.conn.SetPrivateKey(old)
		return fmt.Errorf("rotate key: save identity: %w", err)
	}
	n.mu.Lock()
	err := n.signRecordLocked()
	rec, raw := n.record, n.recordRaw
	peers := make([]*peerState, 0, len(n.peers))
	for _, p := range n.peers {
		peers = append(peers, p)
	}
	n.mu.Unlock()
	if err != nil {
		return err
	}
	n.storeRecord(rec, raw)
	var wg sync.WaitGroup
	var failed int
	var fmu sync.Mutex
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := n.conn.Call(cctx, nat.Peer{Addr: p.endpoint, Key: p.rec.WireGuardKey()}, nat.MsgConnect, raw)
			if err != nil {
				fmu.Lock()
				failed++
				fmu.Unlock()
				n.logger.Warn("peer did not take the new key (it will on its next lookup)", "name", p.rec.Cert.Name, "err", err)
			}
		}()
	}
	wg.Wait()
	if err := n.tun.SetPrivateKey(tunnel.Key(n.id.WG)); err != nil {
		return fmt.Errorf("rotate key: device: %w", err)
	}
	// Kick a handshake with every peer now rather than on the next packet.
	for _, p := range peers {
		_ = n.tun.SetPeer(tunnel.Peer{PublicKey: tunnel.Key(p.rec.WireGuardKey()), Endpoint: p.endpoint,
			AllowedIPs: peerPrefixes(p.rec), Keepalive: 0})
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	n.publish(pctx)
	cancel()
	n.logger.Info("WireGuard key rotated", "peers", len(peers), "peers_not_told", failed)
	return nil
}

// renewMargin is how much of a certificate's validity may remain before the
// node asks the anchors for a renewed one.
const renewMargin = 3 // renew in the last third

// renewRetry is how long to wait after a failed renewal.
const renewRetry = 10 * time.Second

// maybeRenew renews the node's certificate when it enters the last third
// of its validity, collecting t anchor endorsements.
func (n *Node) maybeRenew(ctx context.Context) error {
	c := n.certificate()
	if _, ok := n.view.Set().Anchor(c.NodeID); ok {
		return nil // anchors hold derived certificates
	}
	span := c.NotAfter.Sub(c.NotBefore)
	if n.now().Before(c.NotAfter.Add(-span / renewMargin)) {
		return nil
	}
	if err := n.renew(ctx, span); err != nil {
		n.logger.Warn("certificate renewal failed; will retry", "expires", c.NotAfter, "err", err)
		return err
	}
	return nil
}

func (n *Node) certificate() *trust.Certificate {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cert
}

// renew asks every anchor it can reach to endorse a renewed certificate.
func (n *Node) renew(ctx context.Context, validity time.Duration) error {
	req, err := trust.NewRenewRequest(n.id, n.certificate(), validity, n.now())
	if err != nil {
		return err
	}
	body, err := req.Marshal()
	if err != nil {
		return err
	}
	cert := req.Certificate()
	var errs []error
	for _, a := range n.anchorPeers(ctx) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := n.conn.Call(cctx, a, msgRenew, body)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp, err := trust.UnmarshalJoinResponse(out)
		if err == nil {
			err = resp.Err()
		}
		var got *trust.Certificate
		if err == nil {
			got, err = resp.Certificate()
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range got.Endorsements {
			_ = cert.AddEndorsement(e)
		}
		if n.view.VerifyCertificate(cert, n.now()) == nil {
			break
		}
	}
	if err := n.view.VerifyCertificate(cert, n.now()); err != nil {
		return fmt.Errorf("renewed certificate incomplete (%w): %w", err, errors.Join(errs...))
	}
	if err := trust.SaveCertificate(n.cfg.StateDir, cert); err != nil {
		return err
	}
	n.mu.Lock()
	n.cert = cert
	n.mu.Unlock()
	if err := n.resignRecord(); err != nil {
		return err
	}
	n.publish(ctx)
	n.logger.Info("certificate renewed", "not_after", cert.NotAfter, "endorsements", len(cert.Endorsements))
	return nil
}

// anchorPeers lists the anchors of the current set this node can address:
// bootstrap nodes that are anchors, and anchors with endpoints in the
// genesis or chain.
func (n *Node) anchorPeers(ctx context.Context) []nat.Peer {
	var out []nat.Peer
	seen := map[[32]byte]bool{}
	set := n.view.Set()
	n.resolveBootstrap(ctx)
	n.mu.Lock()
	for ap, id := range n.bootIDs {
		p, ok := n.bootPeers[ap]
		if _, anchor := set.Anchor(id); ok && anchor && !seen[p.Key] {
			seen[p.Key] = true
			out = append(out, nat.Peer{Addr: p.Addr, Key: p.Key})
		}
	}
	n.mu.Unlock()
	for _, a := range set.Anchors {
		for _, ep := range a.Endpoints {
			if !seen[a.WGKey] {
				seen[a.WGKey] = true
				out = append(out, nat.Peer{Addr: ep, Key: a.WGKey})
			}
		}
	}
	return out
}

// handleRenew endorses a renewed certificate (anchors only).
func (n *Node) handleRenew(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	req, err := trust.UnmarshalRenewRequest(body)
	var resp *trust.JoinResponse
	if err == nil {
		var e *trust.Endorsement
		if a := n.anchorState(); a == nil {
			err = ErrNotAnchor
		} else if e, err = a.Renew(req, n.now()); err == nil {
			resp = endorsed(req.Certificate(), e)
		}
	}
	if err != nil {
		n.countReject(err)
		n.logger.Warn("renewal not endorsed", "from", from.Addr, "reason", err)
		resp = trust.NewJoinResponse(nil, err)
	}
	return resp.Marshal()
}

// endorsed answers a join or renewal with the proposed certificate carrying
// this anchor's endorsement.
func endorsed(c *trust.Certificate, e *trust.Endorsement) *trust.JoinResponse {
	c.Endorsements = []trust.Endorsement{*e}
	return trust.NewJoinResponse(c, nil)
}

// peerPrefixes are a peer's allowed IPs: its overlay /32 and /128.
func peerPrefixes(rec *trust.NodeRecord) []netip.Prefix {
	return []netip.Prefix{netip.PrefixFrom(rec.Cert.IPv4, 32), netip.PrefixFrom(rec.Cert.IPv6(), 128)}
}
