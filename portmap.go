package weft

// Port mapping. Most home gateways map a port on request (NAT-PMP, RFC
// 6886): a node asks its default gateway to forward the shared socket's
// UDP port from the gateway's public address, and peers can then reach it
// unsolicited, as a node on a public address, whatever the NAT's own
// mapping and filtering (a symmetric NAT included). The mapped address
// goes into the node's record (a peer's direct connect tries it) and into
// its ICE descriptions as a server-reflexive candidate; the mapping is
// renewed while the node runs, asked for again after a network change,
// and deleted on shutdown (nat.PortMapper). Config.NoPortMapping (`weft
// up --portmap=false`) turns it off, and a socket bound to loopback does
// not ask. A gateway that offers no port mapping costs a few unanswered
// datagrams to it, with backoff.

import (
	"net/netip"
	"slices"

	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/nat/ice"
)

// startPortMap starts the port mapper of the node's socket. Called from
// startNAT.
func (n *Node) startPortMap() {
	if n.cfg.NoPortMapping {
		return
	}
	if n.conn.LocalAddr().Addr().IsLoopback() {
		// No gateway forwards to a loopback socket (and tests on
		// loopback must not talk to the machine's gateway).
		n.logger.Debug("port mapping off: the socket is on loopback")
		return
	}
	pm, err := nat.NewPortMapper(nat.PortMapperConfig{
		Port:     n.conn.LocalAddr().Port(),
		OnChange: n.portMappingChanged,
		Log:      n.cfg.Logger,
	})
	if err != nil {
		n.logger.Warn("port mapping off", "err", err)
		return
	}
	n.nat.portmap = pm
	pm.Start()
}

// closePortMap deletes the mapping. Called from closeNAT, before the
// socket closes.
func (n *Node) closePortMap() {
	if n.nat != nil && n.nat.portmap != nil {
		n.nat.portmapClosing.Store(true)
		n.nat.portmap.Close()
	}
}

// portMappingChanged records the mapping (zero: none) and re-signs the
// node's record, whose endpoints name it.
func (n *Node) portMappingChanged(m nat.PortMapping) {
	if m.IsZero() {
		n.nat.mapped.Store(nil)
		n.logger.Info("port mapping gone")
	} else {
		n.nat.mapped.Store(&m)
		n.logger.Info("port mapped", "mapping", m.String())
	}
	if n.isClosed() || n.nat.portmapClosing.Load() {
		return // the node is going down: no record to re-sign
	}
	if err := n.resignRecord(); err != nil {
		n.logger.Warn("port mapping: re-signing the record", "err", err)
	}
}

// portMapping returns the gateway's mapping of the node's socket, if it
// has one.
func (n *Node) portMapping() (nat.PortMapping, bool) {
	if n.nat == nil {
		return nat.PortMapping{}, false
	}
	m := n.nat.mapped.Load()
	if m == nil {
		return nat.PortMapping{}, false
	}
	return *m, true
}

// withPortMapping returns eps with the mapped address added, if there is
// one and eps lacks it.
func (n *Node) withPortMapping(eps []netip.AddrPort) []netip.AddrPort {
	m, ok := n.portMapping()
	if !ok || slices.Contains(eps, m.External) {
		return eps
	}
	return append(eps, m.External)
}

// addPortMapping adds the mapped address to desc as a server-reflexive
// candidate: the peer's checks to it reach the shared socket through the
// gateway.
func (n *Node) addPortMapping(desc *ice.Description) {
	if m, ok := n.portMapping(); ok {
		if err := desc.AddCandidate(ice.MappedCandidate(m.External)); err != nil {
			n.logger.Debug("port mapping: ICE candidate", "err", err)
		}
	}
}
