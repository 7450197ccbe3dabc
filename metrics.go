package weft

import (
	"reflect"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-net/weft/trust"
)

// countReject counts a refused record, connect or join by its typed reason
// (trust.Reason), so that `weft status` and the metrics say why things
// are refused.
func (n *Node) countReject(err error) {
	reason := "other"
	if r, ok := trust.ReasonOf(err); ok {
		reason = r.String()
	}
	n.mu.Lock()
	n.rejects[reason]++
	n.mu.Unlock()
}

// Collector returns a Prometheus collector of the node's state, read at
// scrape time: peers and their traffic, socket, record store and DNS
// counters, and refusals by reason. Register it with a registry of your
// own; `weft up --metrics ADDR` serves it on /metrics.
func (n *Node) Collector() prometheus.Collector { return nodeCollector{n} }

type nodeCollector struct{ n *Node }

var (
	descInfo = prometheus.NewDesc("weft_node_info", "The node: always 1, with identity labels.",
		[]string{"name", "node_id", "network", "ipv4", "ipv6", "mode"}, nil)
	descPeers     = prometheus.NewDesc("weft_peers", "Configured WireGuard peers.", nil, nil)
	descPeerRx    = prometheus.NewDesc("weft_peer_received_bytes_total", "Bytes received from a peer.", []string{"peer"}, nil)
	descPeerTx    = prometheus.NewDesc("weft_peer_sent_bytes_total", "Bytes sent to a peer.", []string{"peer"}, nil)
	descPeerHS    = prometheus.NewDesc("weft_peer_last_handshake_seconds", "Unix time of the last handshake with a peer (0: never).", []string{"peer"}, nil)
	descRejects   = prometheus.NewDesc("weft_rejections_total", "Records, connects and joins refused, by reason.", []string{"reason"}, nil)
	descSpoofed   = prometheus.NewDesc("weft_spoofed_packets_dropped_total", "Tunnel packets dropped for a source address that is not the sender's.", nil, nil)
	descBootstrap = prometheus.NewDesc("weft_bootstrap_reachable", "Bootstrap nodes that answered.", nil, nil)
	descCertLeft  = prometheus.NewDesc("weft_certificate_expiry_seconds", "Seconds until this node's certificate expires.", nil, nil)
)

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	st, err := n.Status()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1,
		st.Name, st.NodeID.String(), st.Network, st.IPv4.String(), st.IPv6.String(), st.Mode)
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(len(st.Peers)))
	for _, p := range st.Peers {
		ch <- prometheus.MustNewConstMetric(descPeerRx, prometheus.CounterValue, float64(p.RxBytes), p.Name)
		ch <- prometheus.MustNewConstMetric(descPeerTx, prometheus.CounterValue, float64(p.TxBytes), p.Name)
		hs := 0.0
		if !p.LastHandshake.IsZero() {
			hs = float64(p.LastHandshake.Unix())
		}
		ch <- prometheus.MustNewConstMetric(descPeerHS, prometheus.GaugeValue, hs, p.Name)
	}
	for reason, v := range st.Rejections {
		ch <- prometheus.MustNewConstMetric(descRejects, prometheus.CounterValue, float64(v), reason)
	}
	ch <- prometheus.MustNewConstMetric(descSpoofed, prometheus.CounterValue, float64(st.SpoofedDrops))
	ch <- prometheus.MustNewConstMetric(descBootstrap, prometheus.GaugeValue, float64(st.BootstrapReachable))
	ch <- prometheus.MustNewConstMetric(descCertLeft, prometheus.GaugeValue, time.Until(st.CertExpires).Seconds())
	collectStruct(ch, "weft_socket_", "Shared UDP socket: ", n.conn.Stats())
	collectStruct(ch, "weft_store_", "Record store: ", n.store.Stats())
	if m, ok := n.relayMetrics(); ok {
		collectStruct(ch, "weft_relay_", "TURN relay: ", m)
	}
	if n.dns != nil {
		collectStruct(ch, "weft_dns_", "Overlay DNS server: ", n.dns.Stats())
	}
}

// collectStruct emits one metric per integer field of a stats struct:
// uint64 fields as counters (name_total), int fields as gauges.
func collectStruct(ch chan<- prometheus.Metric, prefix, help string, s any) {
	v := reflect.ValueOf(s)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := prefix + snake(f.Name)
		switch f.Type.Kind() {
		case reflect.Uint64:
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name+"_total", help+f.Name, nil, nil),
				prometheus.CounterValue, float64(v.Field(i).Uint()))
		case reflect.Int:
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help+f.Name, nil, nil),
				prometheus.GaugeValue, float64(v.Field(i).Int()))
		}
	}
}

// snake turns a Go field name into a metric name: WireGuardIn → wire_guard_in.
func snake(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			if i > 0 && (unicode.IsLower(rs[i-1]) || (i+1 < len(rs) && unicode.IsLower(rs[i+1]))) {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
