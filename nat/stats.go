package nat

import "sync/atomic"

// Stats is a snapshot of a Conn's counters. All counts are since Listen.
type Stats struct {
	PacketsIn   uint64 // datagrams read from the socket (each segment of a coalesced one counts)
	BytesIn     uint64 // bytes read from the socket
	CoalescedIn uint64 // reads that returned several GRO-coalesced datagrams
	ReadErrors  uint64 // transient socket read errors
	Oversized   uint64 // datagrams larger than MaxPacketSize, dropped

	WireGuardIn         uint64 // WireGuard datagrams returned by the Bind's ReceiveFunc
	WireGuardDropped    uint64 // WireGuard datagrams read while the Bind was closed (or as it closed), dropped
	WireGuardOut        uint64 // WireGuard datagrams sent
	WireGuardSendErrors uint64 // failed Bind.Send calls

	STUNIn          uint64 // STUN datagrams received
	STUNOut         uint64 // STUN datagrams sent from the shared socket (responses, requests, retransmissions, relayed probes, SendSTUN)
	STUNAnswered    uint64 // Binding requests answered by the plain responder (success or 420)
	STUNClaimed     uint64 // STUN datagrams consumed by the STUNHandler (ICE)
	STUNResponsesIn uint64 // responses matched to an outstanding STUNBinding or probe
	STUNUnmatched   uint64 // responses for no transaction of ours, from the wrong source, or duplicates
	STUNRetransmits uint64 // STUNBinding request retransmissions
	STUNRateLimited uint64 // Binding requests refused by the per-source rate limit
	STUNMalformed   uint64 // STUN datagrams with a bad header, attributes or FINGERPRINT
	STUNQueueFull   uint64 // STUN datagrams dropped because the workers were saturated
	STUNDropped     uint64 // unclaimed ICE checks, indications and methods other than Binding
	TURNDropped     uint64 // TURN ChannelData datagrams (not handled until TURN lands)
	UnknownDropped  uint64 // datagrams matching no protocol

	ProbesSent      uint64 // netcheck filtering probes sent to requesters (MsgProbe)
	ProbesForwarded uint64 // MsgProbe requests passed on to a helper
	ProbesRefused   uint64 // MsgProbe requests refused (no helper, no second socket, not allowed)

	ControlIn           uint64 // control packets received
	ControlOut          uint64 // control packets sent (including retransmissions)
	ControlMalformed    uint64 // control packets that failed to parse
	ControlUnsealable   uint64 // sealed control packets that failed authentication
	ControlBadKey       uint64 // control packets from a low-order sender key
	ControlPlainRefused uint64 // plain (unsealed) packets of a type other than MsgHello
	ControlRateLimited  uint64 // control packets refused by the per-source rate limit
	ControlQueueFull    uint64 // control packets dropped because workers were saturated
	ControlUnknownType  uint64 // requests for a type with no handler (answered with an error)

	RequestsHandled    uint64 // requests passed to a handler
	ResponsesIn        uint64 // responses matched to a pending call
	ResponsesUnmatched uint64 // responses for no pending call (late, duplicate or forged txid)
	CallsStarted       uint64 // Call and CallHello invocations
	Retransmits        uint64 // request retransmissions
}

// counters is the live, atomically updated form of Stats.
type counters struct {
	packetsIn, bytesIn, coalescedIn, readErrors, oversized         atomic.Uint64
	wgIn, wgDropped, wgOut, wgSendErrors                           atomic.Uint64
	stunIn, stunOut, stunAnswered, stunClaimed, stunResponsesIn    atomic.Uint64
	stunUnmatched, stunRetransmits, stunRateLimited, stunMalformed atomic.Uint64
	stunQueueFull, stunDropped, turnDropped, unknownDropped        atomic.Uint64
	probesSent, probesForwarded, probesRefused                     atomic.Uint64
	ctlIn, ctlOut, ctlMalformed, ctlUnsealable, ctlBadKey          atomic.Uint64
	ctlPlainRefused, ctlRateLimited, ctlQueueFull, ctlUnknownType  atomic.Uint64
	requestsHandled, responsesIn, responsesUnmatched, callsStarted atomic.Uint64
	retransmits                                                    atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		PacketsIn:           c.packetsIn.Load(),
		BytesIn:             c.bytesIn.Load(),
		CoalescedIn:         c.coalescedIn.Load(),
		ReadErrors:          c.readErrors.Load(),
		Oversized:           c.oversized.Load(),
		WireGuardIn:         c.wgIn.Load(),
		WireGuardDropped:    c.wgDropped.Load(),
		WireGuardOut:        c.wgOut.Load(),
		WireGuardSendErrors: c.wgSendErrors.Load(),
		STUNIn:              c.stunIn.Load(),
		STUNOut:             c.stunOut.Load(),
		STUNAnswered:        c.stunAnswered.Load(),
		STUNClaimed:         c.stunClaimed.Load(),
		STUNResponsesIn:     c.stunResponsesIn.Load(),
		STUNUnmatched:       c.stunUnmatched.Load(),
		STUNRetransmits:     c.stunRetransmits.Load(),
		STUNRateLimited:     c.stunRateLimited.Load(),
		STUNMalformed:       c.stunMalformed.Load(),
		STUNQueueFull:       c.stunQueueFull.Load(),
		STUNDropped:         c.stunDropped.Load(),
		ProbesSent:          c.probesSent.Load(),
		ProbesForwarded:     c.probesForwarded.Load(),
		ProbesRefused:       c.probesRefused.Load(),
		TURNDropped:         c.turnDropped.Load(),
		UnknownDropped:      c.unknownDropped.Load(),
		ControlIn:           c.ctlIn.Load(),
		ControlOut:          c.ctlOut.Load(),
		ControlMalformed:    c.ctlMalformed.Load(),
		ControlUnsealable:   c.ctlUnsealable.Load(),
		ControlBadKey:       c.ctlBadKey.Load(),
		ControlPlainRefused: c.ctlPlainRefused.Load(),
		ControlRateLimited:  c.ctlRateLimited.Load(),
		ControlQueueFull:    c.ctlQueueFull.Load(),
		ControlUnknownType:  c.ctlUnknownType.Load(),
		RequestsHandled:     c.requestsHandled.Load(),
		ResponsesIn:         c.responsesIn.Load(),
		ResponsesUnmatched:  c.responsesUnmatched.Load(),
		CallsStarted:        c.callsStarted.Load(),
		Retransmits:         c.retransmits.Load(),
	}
}
